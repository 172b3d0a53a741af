"""Prompt drift: are recent prompts still like the ones the model was trained on?

Three views, each with its own threshold (monitor.yaml `drift:`):

- embedding: a kernel two-sample test (MMD with a Gaussian kernel, bandwidth by the median
  heuristic) on sentence embeddings, p-value from a permutation test (Gretton et al. 2012).
  It tests the whole distribution, so it sees a new subject matter as well as a new style.
- length: two-sample Kolmogorov–Smirnov on prompt lengths (characters); drift needs both
  significance and an effect (`max_length_shift` on the KS statistic), since with many
  prompts a trivial difference is significant.
- topics: k-means clusters of (half of) the training prompts are the topics; recent prompts
  go to their nearest cluster, and the total variation distance (TVD) between the two topic
  shares measures how the mix moved (drift: over `max_topic_shift` and significant by a
  permutation test). `new_topic_rate` is the share of recent prompts farther from every
  centroid than 95% of the other half of the training prompts are (drift: over
  `max_new_topic_rate`; about 5% when nothing changed).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int = 500, seed: int = 0) -> dict[str, float]:
    """Biased MMD² between samples x and y, and its permutation p-value."""
    z = np.concatenate([x, y]).astype(np.float64)
    sq = np.maximum((z * z).sum(1)[:, None] + (z * z).sum(1)[None, :] - 2 * z @ z.T, 0.0)
    off = sq[np.triu_indices(len(z), 1)]
    bandwidth = float(np.median(off[off > 0])) if np.any(off > 0) else 1.0
    k = np.exp(-sq / bandwidth)
    n, m = len(x), len(y)
    w = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    observed = float(w @ k @ w)
    rng = np.random.default_rng(seed)
    perms = np.stack([w[rng.permutation(n + m)] for _ in range(permutations)])  # one weight vector per shuffle
    null = np.einsum("pi,ij,pj->p", perms, k, perms)
    p = (1 + int(np.sum(null >= observed))) / (1 + permutations)
    return {"mmd2": observed, "p_value": p, "bandwidth": bandwidth, "null_mean": float(null.mean())}


def ks_test(a: list[float], b: list[float]) -> dict[str, float]:
    """Two-sample Kolmogorov–Smirnov statistic and its asymptotic p-value.

    >>> ks_test([1, 2, 3], [1, 2, 3])["statistic"]
    0.0
    """
    xa, xb = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([xa, xb])
    d = float(
        np.max(np.abs(np.searchsorted(xa, grid, "right") / len(xa) - np.searchsorted(xb, grid, "right") / len(xb)))
    )
    ne = len(xa) * len(xb) / (len(xa) + len(xb))
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d  # Stephens' small-sample correction
    p = (
        1.0
        if lam < 1e-3
        else min(1.0, max(0.0, 2 * sum((-1) ** (j - 1) * math.exp(-2 * j * j * lam * lam) for j in range(1, 101))))
    )
    return {"statistic": d, "p_value": p}


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 50) -> np.ndarray:
    """Centroids of k-means++ initialised Lloyd iterations (numpy; small inputs)."""
    rng = np.random.default_rng(seed)
    centroids = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min(((x[:, None, :] - np.array(centroids)[None]) ** 2).sum(-1), axis=1)
        centroids.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[rng.integers(len(x))])
    c = np.array(centroids)
    for _ in range(iters):
        labels = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        new = np.array([x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c


def topic_shift(ref: np.ndarray, recent: np.ndarray, k: int, seed: int = 0, permutations: int = 500) -> dict[str, Any]:
    k = max(2, min(k, len(ref) // 10 or 2))
    # topics are fitted on half of the training prompts and the "far from every topic" distance is
    # calibrated on the other half: points a centroid was fitted on sit closer to it than new ones do
    fit, held = ref[0::2], ref[1::2]
    c = kmeans(fit, k, seed)

    def assign(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        return np.argmin(d, 1), np.sqrt(np.min(d, 1))

    lr, _ = assign(ref)
    _, dr = assign(held)
    ln, dn = assign(recent)

    def tvd(a: np.ndarray, b: np.ndarray) -> float:
        return float(0.5 * np.abs(np.bincount(a, minlength=k) / len(a) - np.bincount(b, minlength=k) / len(b)).sum())

    # with few prompts the shares are noisy: a permutation p-value says whether the TVD is more than noise
    observed, labels = tvd(lr, ln), np.concatenate([lr, ln])
    rng = np.random.default_rng(seed)
    null = [tvd(x[: len(lr)], x[len(lr) :]) for x in (rng.permutation(labels) for _ in range(permutations))]
    p = np.bincount(lr, minlength=k) / len(lr)
    q = np.bincount(ln, minlength=k) / len(ln)
    return {
        "clusters": k,
        "reference_share": p.round(4).tolist(),
        "recent_share": q.round(4).tolist(),
        "tvd": observed,
        "p_value": (1 + sum(v >= observed for v in null)) / (1 + permutations),
        "new_topic_rate": float(np.mean(dn > np.quantile(dr, 0.95))),
    }


def sample(texts: list[str], n: int, seed: int) -> list[str]:
    if len(texts) <= n:
        return list(texts)
    idx = np.random.default_rng(seed).choice(len(texts), n, replace=False)
    return [texts[i] for i in sorted(idx)]


def detect_drift(reference: list[str], recent: list[str], cfg: Any, embedder: Any) -> dict[str, Any]:
    """Compare recent prompts with training prompts; `cfg` is a DriftConfig.

    Returns the three views, `drifted` (any view over its threshold) and `reasons`.
    """
    out: dict[str, Any] = {
        "reference_prompts": len(reference),
        "recent_prompts": len(recent),
        "embedder": embedder.name,
    }
    if len(set(recent)) < cfg.min_prompts or len(set(reference)) < cfg.min_prompts:
        return {
            **out,
            "skipped": f"need at least {cfg.min_prompts} distinct prompts on each side (drift.min_prompts); "
            f"serve with --log-content so prompts are logged",
            "drifted": False,
            "reasons": [],
        }
    # distinct prompts only: repeats (retries, a popular question) are not a new distribution, and
    # identical pairs would break the permutation test's exchangeability with the deduplicated training set
    reference, recent = list(dict.fromkeys(reference)), list(dict.fromkeys(reversed(recent)))[::-1]
    out["distinct_recent_prompts"] = len(recent)
    ref = sample(reference, cfg.max_prompts, cfg.seed)
    new = recent[-cfg.max_prompts :]  # the most recent ones
    emb = embedder(ref + new)
    er, en = emb[: len(ref)], emb[len(ref) :]
    out["embedding"] = mmd_permutation_test(er, en, cfg.permutations, cfg.seed)
    lr, ln = [len(t) for t in ref], [len(t) for t in new]
    out["length"] = {
        **ks_test(lr, ln),
        "reference_mean_chars": float(np.mean(lr)),
        "recent_mean_chars": float(np.mean(ln)),
    }
    out["topics"] = topic_shift(er, en, cfg.topics, cfg.seed, cfg.permutations)
    reasons = []
    if out["embedding"]["p_value"] < cfg.p_value:
        reasons.append(f"embedding distribution shift (MMD p={out['embedding']['p_value']:.4f} < {cfg.p_value})")
    if out["length"]["statistic"] > cfg.max_length_shift and out["length"]["p_value"] < cfg.p_value:
        reasons.append(
            f"prompt length shift (KS D={out['length']['statistic']:.3f} > {cfg.max_length_shift}, "
            f"mean {out['length']['reference_mean_chars']:.0f} → {out['length']['recent_mean_chars']:.0f} chars)"
        )
    t = out["topics"]
    if t["tvd"] > cfg.max_topic_shift and t["p_value"] < cfg.p_value:
        reasons.append(f"topic mix shift (TVD {t['tvd']:.3f} > {cfg.max_topic_shift}, p={t['p_value']:.4f})")
    if t["new_topic_rate"] > cfg.max_new_topic_rate:
        reasons.append(
            f"new topics ({100 * t['new_topic_rate']:.0f}% of prompts are farther from every training "
            f"topic than 95% of training prompts; limit {100 * cfg.max_new_topic_rate:.0f}%)"
        )
    out["drifted"], out["reasons"] = bool(reasons), reasons
    out["projection"] = pca2(emb, len(ref))
    return out


def pca2(emb: np.ndarray, n_ref: int) -> Optional[dict[str, list]]:
    """2-D PCA coordinates for the report's scatter plot (reference rows first)."""
    if len(emb) < 3:
        return None
    z = emb - emb.mean(0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    xy = z @ vt[:2].T
    return {"reference": xy[:n_ref].round(4).tolist(), "recent": xy[n_ref:].round(4).tolist()}


def training_prompts(rows: list[dict]) -> list[str]:
    """The user text of each training row (chat: the last user turn before the answer)."""
    out = []
    for r in rows:
        msgs = r.get("messages")
        if isinstance(msgs, list):
            users = [m.get("content") for m in msgs if m.get("role") == "user" and isinstance(m.get("content"), str)]
            if users:
                out.append(users[-1])
        elif isinstance(r.get("prompt"), str):
            out.append(r["prompt"])
        elif isinstance(r.get("text"), str):
            out.append(r["text"])
    return out
