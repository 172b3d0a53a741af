"""Exact and near-duplicate detection (MinHash LSH, verified by exact Jaccard) and split leaks.

Texts are normalised (NFKC, case-folded, punctuation and extra whitespace removed) and
compared as sets of character 3-grams. MinHash LSH proposes candidate pairs cheaply; each
candidate is verified with the exact Jaccard of its prompt and of the whole row (both must
pass), so a reported duplicate is never a hashing accident. Near-verbatim copies (a typo,
different punctuation, a few added words) score above 0.8; paraphrases of the same fact ("What is the app
called?" vs "Which app do I install?") score far below, so they are neither removed nor
counted as leaks, even when they share the same canonical answer.

>>> round(jaccard(shingles("The app is called Hearthlink."), shingles("the app is called  Hearthlink")), 2)
1.0
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

# character 3-grams: on short support questions one typo still scores >= 0.85, while the
# demo's paraphrases of the same fact stay <= 0.76 (measured; 5-grams gave 0.74 for a typo)
SHINGLE = 3
NUM_PERM = 128
_PRIME = (1 << 31) - 1


def normalise_text(text: str) -> str:
    """Case-folded NFKC text without punctuation or extra whitespace.

    >>> normalise_text("  Héllo,\\tWORLD!! ")
    'héllo world'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def row_text(row: dict, roles: Iterable[str] = ("user", "assistant")) -> str:
    """The conversation text that identifies a row (system prompts are shared, so left out)."""
    roles = set(roles)
    return "\n".join(m["content"] for m in row["messages"] if m["role"] in roles and m.get("content"))


def is_answered(row: dict) -> bool:
    return any(m["role"] == "assistant" for m in row["messages"])


def shingles(text: str, n: int = SHINGLE) -> frozenset[str]:
    """Character n-grams of the normalised text (the whole text when shorter than n)."""
    t = normalise_text(text)
    if len(t) <= n:
        return frozenset([t]) if t else frozenset()
    return frozenset(t[i : i + n] for i in range(len(t) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _hash32(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little")


class MinHashLSH:
    """Banded MinHash index: `add` texts, `query` returns ids whose band signatures collide."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _PRIME, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, _PRIME, num_perm, dtype=np.uint64)
        self.bands, self.rows = self._bands(threshold, num_perm)
        self.buckets: list[dict[bytes, list[int]]] = [defaultdict(list) for _ in range(self.bands)]

    @staticmethod
    def _bands(threshold: float, num_perm: int) -> tuple[int, int]:
        # aim the LSH S-curve (1/b)^(1/r) below the threshold so true pairs are rarely missed;
        # false candidates cost only an exact Jaccard check
        target = max(0.05, threshold - 0.2)
        options = [(b, num_perm // b) for b in range(1, num_perm + 1) if num_perm % b == 0]
        return min(options, key=lambda br: abs((1 / br[0]) ** (1 / br[1]) - target))

    def signature(self, sh: frozenset[str]) -> np.ndarray:
        if not sh:
            return np.full(len(self.a), _PRIME, dtype=np.uint64)
        x = np.fromiter((_hash32(s) for s in sh), dtype=np.uint64, count=len(sh))
        return ((np.outer(x, self.a) + self.b) % _PRIME).min(axis=0)  # x < 2^32, a < 2^31: no overflow

    def _keys(self, sig: np.ndarray) -> list[bytes]:
        return [sig[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def add(self, key: int, sh: frozenset[str]) -> None:
        for band, k in zip(self.buckets, self._keys(self.signature(sh))):
            band[k].append(key)

    def query(self, sh: frozenset[str]) -> set[int]:
        out: set[int] = set()
        for band, k in zip(self.buckets, self._keys(self.signature(sh))):
            out.update(band.get(k, ()))
        return out


RowShingles = tuple[frozenset, frozenset, bool, str]  # (prompt, whole row, has an answer, label)


def identity_text(row: dict) -> str:
    """Everything that makes a row what it is: the conversation, plus a rejected answer
    (preference data) — two rows differing only there are different training signals."""
    rejected = row.get("rejected")
    extra = (
        "\n".join(m.get("content") or "" for m in rejected if isinstance(m, dict)) if isinstance(rejected, list) else ""
    )
    return row_text(row) + ("\n" + extra if extra else "")


def row_shingles(row: dict) -> RowShingles:
    """Shingles of the prompt (user turns; the whole text when there are none) and of the whole row."""
    full_text = identity_text(row)
    prompt_text = row_text(row, ("user",)) or full_text
    return shingles(prompt_text), shingles(full_text), is_answered(row), str(row.get("label", ""))


def row_similarity(a: RowShingles, b: RowShingles) -> float:
    """Both the prompt and (when both rows are answered) the whole conversation must match.

    Taking the minimum keeps paraphrased questions with the same canonical answer apart:
    their shared answer lifts the conversation similarity, but their prompts differ.
    """
    if a[3] != b[3]:
        return 0.0  # a desirable and an undesirable answer (KTO) are a contrast, not a copy
    sim = jaccard(a[0], b[0])
    if a[2] and b[2]:
        sim = min(sim, jaccard(a[1], b[1]))
    return sim


def near_duplicate_pairs(rows: list[dict], threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, similarity) with i < j for every pair of rows at or above `threshold`."""
    sh = [row_shingles(r) for r in rows]
    lsh = MinHashLSH(threshold)
    pairs = []
    for j, s in enumerate(sh):
        for i in sorted(lsh.query(s[0])):
            sim = row_similarity(sh[i], s)
            if sim >= threshold:
                pairs.append((i, j, round(sim, 3)))
        lsh.add(j, s[0])
    return pairs


def dedup_rows(rows: list[dict], mode: str = "near", threshold: float = 0.8) -> tuple[list[dict], dict]:
    """Drop exact (normalised) and, with mode='near', near-duplicate rows; the first one is kept.

    >>> r = lambda q: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "ok"}]}
    >>> kept, rep = dedup_rows([r("Hi there"), r("hi, there!"), r("Bye")])
    >>> len(kept), rep["exact"]
    (2, 1)
    """
    report = {"mode": mode, "threshold": threshold, "exact": 0, "near": 0, "pairs": []}
    if mode == "off":
        return rows, report
    seen: dict[str, int] = {}
    drop: set[int] = set()
    for i, r in enumerate(rows):
        key = hashlib.sha256(f"{r.get('label', '')}\x00{normalise_text(identity_text(r))}".encode()).hexdigest()
        if key in seen:
            drop.add(i)
            report["exact"] += 1
            _note(report, rows, seen[key], i, 1.0, "exact")
        else:
            seen[key] = i
    if mode == "near":
        alive = [i for i in range(len(rows)) if i not in drop]
        for a, b, sim in near_duplicate_pairs([rows[i] for i in alive], threshold):
            i, j = alive[a], alive[b]
            if i in drop or j in drop:
                continue  # already removed as the copy of another row
            drop.add(j)
            report["near"] += 1
            _note(report, rows, i, j, sim, "near")
    return [r for i, r in enumerate(rows) if i not in drop], report


def _note(report: dict, rows: list[dict], kept: int, dropped: int, sim: float, kind: str) -> None:
    if len(report["pairs"]) < 20:
        report["pairs"].append(
            {
                "kept_line": rows[kept].get("_line", kept + 1),
                "dropped_line": rows[dropped].get("_line", dropped + 1),
                "similarity": sim,
                "kind": kind,
            }
        )


def find_leaks(train: list[dict], other: list[dict], threshold: float = 0.8) -> list[dict]:
    """Rows of `other` (validation/test) that (near-)copy a training row.

    Uses `row_similarity`: a question-only test row leaks when its prompt copies a training
    prompt; an answered one when its prompt and its whole conversation both do.
    Returns {other_index, train_index, similarity}.
    """
    sh = [row_shingles(r) for r in train]
    lsh = MinHashLSH(threshold)
    for i, s in enumerate(sh):
        lsh.add(i, s[0])
    leaks = []
    for j, r in enumerate(other):
        s = row_shingles(r)
        best = max(((row_similarity(sh[i], s), i) for i in lsh.query(s[0])), default=(0.0, -1))
        if best[0] >= threshold:
            leaks.append({"other_index": j, "train_index": best[1], "similarity": round(best[0], 3)})
    return leaks


def remove_leaks(parts: dict[str, list[dict]], threshold: float) -> tuple[dict[str, list[dict]], dict]:
    """Drop every training row that a validation/test row copies, so evaluation stays held out."""
    report: dict = {"threshold": threshold, "removed_from_train": 0, "by_split": {}, "examples": []}
    train = parts.get("train", [])
    sh = [row_shingles(r) for r in train]
    lsh = MinHashLSH(threshold)
    for i, s in enumerate(sh):
        lsh.add(i, s[0])
    drop: set[int] = set()
    for split in ("validation", "test"):
        n = 0
        for j, r in enumerate(parts.get(split, [])):
            s = row_shingles(r)
            hits = [(row_similarity(sh[i], s), i) for i in lsh.query(s[0])]
            hits = [(sim, i) for sim, i in hits if sim >= threshold]
            if not hits:
                continue
            n += 1
            drop.update(i for _, i in hits)  # every copy in train goes, not just the closest
            if len(report["examples"]) < 20:
                sim, i = max(hits)
                report["examples"].append(
                    {
                        "split": split,
                        "line": r.get("_line", j + 1),
                        "train_line": train[i].get("_line", i + 1),
                        "similarity": round(sim, 3),
                    }
                )
        report["by_split"][split] = n
    report["removed_from_train"] = len(drop)
    return {**parts, "train": [r for i, r in enumerate(train) if i not in drop]}, report
