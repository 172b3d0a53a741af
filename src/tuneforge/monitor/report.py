"""`tuneforge monitor report`: one self-contained HTML page (plots inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Optional

from ..evaluate.plots import _pyplot
from ..io import atomic_write_text


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def plot_windows(result: dict) -> Optional[str]:
    """Latency p50/p95, requests and error rate per window, one line per adapter."""
    wins = result["windows"]
    if not wins:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for name in sorted({w["adapter"] for w in wins}):
        ws = [w for w in wins if w["adapter"] == name]
        x = list(range(len(ws))) if len(ws) == 1 else [w["start"][5:16] for w in ws]
        axes[0].plot(x, [w["latency_p50_ms"] for w in ws], marker="o", label=f"{name} p50")
        axes[0].plot(x, [w["latency_p95_ms"] for w in ws], marker="x", linestyle="--", label=f"{name} p95")
        axes[1].plot(x, [w["requests"] for w in ws], marker="o", label=name)
        axes[2].plot(x, [w["error_rate"] for w in ws], marker="o", label=name)
    for ax, title in zip(axes, ("latency (ms)", "requests per window", "error rate")):
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.legend(fontsize=7)
    return _png(fig)


def plot_drift(drift: dict, lengths: Optional[tuple[list, list]] = None) -> Optional[str]:
    """Embedding projection (PCA), topic shares, and prompt length histograms."""
    if not drift or drift.get("skipped"):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3 if lengths else 2, figsize=(13, 3.6))
    proj = drift.get("projection")
    if proj:
        for key, colour in (("reference", "tab:blue"), ("recent", "tab:red")):
            pts = proj[key]
            axes[0].scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                s=8,
                alpha=0.6,
                c=colour,
                label="training" if key == "reference" else "recent",
            )
        axes[0].set_title(f"prompt embeddings (PCA) — MMD p={drift['embedding']['p_value']:.3g}")
        axes[0].legend(fontsize=7)
    t = drift["topics"]
    idx = list(range(t["clusters"]))
    axes[1].bar([i - 0.2 for i in idx], t["reference_share"], width=0.4, label="training")
    axes[1].bar([i + 0.2 for i in idx], t["recent_share"], width=0.4, label="recent")
    axes[1].set_title(f"topic shares (TVD {t['tvd']:.3f})")
    axes[1].set_xlabel("training-prompt cluster")
    axes[1].legend(fontsize=7)
    if lengths:
        axes[2].hist(lengths[0], bins=20, alpha=0.5, density=True, label="training")
        axes[2].hist(lengths[1], bins=20, alpha=0.5, density=True, label="recent")
        axes[2].set_title(f"prompt length, chars (KS D={drift['length']['statistic']:.3f})")
        axes[2].legend(fontsize=7)
    return _png(fig)


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


COLS = [
    "adapter",
    "requests",
    "error_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "requests_per_s",
    "completion_tokens_per_s",
    "prompt_tokens",
    "completion_tokens",
    "truncated_rate",
    "empty_rate",
    "refusal_rate",
    "invalid_json_rate",
]
CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;"
    "margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f3f3f3}.bad{color:#b00020}.good{color:#1b7f3b}img{max-width:100%}"
)


def render_html(result: dict, lengths: Optional[tuple[list, list]] = None) -> str:
    status = (
        '<p class="good"><b>OK</b>: no threshold crossed</p>'
        if result["ok"]
        else '<p class="bad"><b>BREACHED</b></p><ul>'
        + "".join(f"<li>{html.escape(b['message'])}</li>" for b in result["breaches"])
        + "</ul>"
    )
    adapters = [{"adapter": a, **s} for a, s in result["adapters"].items()]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>tuneforge monitor</title><style>{CSS}</style>"
        f"</head><body><h1>tuneforge monitoring report</h1>",
        f"<p>request log <code>{html.escape(result['log'])}</code>; run <code>{_fmt(result['run'])}</code>; "
        f"since {_fmt(result['since'])}; generated {result['generated_at']}</p>",
        status,
        "<h2>Per adapter</h2>",
        _table([{"adapter": "all", **result["overall"]}] + adapters, COLS),
    ]
    img = plot_windows(result)
    if img:
        parts += ["<h2>Over time</h2>", img, _table(result["windows"], ["start"] + COLS[:9])]
    drift = result.get("drift")
    parts.append("<h2>Prompt drift</h2>")
    if drift is None:
        parts.append("<p>not tested (give --run RUN to compare with its training prompts)</p>")
    elif drift.get("skipped"):
        parts.append(f"<p>skipped: {html.escape(drift['skipped'])}</p>")
    else:
        e, ln, t = drift["embedding"], drift["length"], drift["topics"]
        parts.append(
            _table(
                [
                    {"test": "embedding MMD (permutation)", "statistic": e["mmd2"], "p_value": e["p_value"]},
                    {"test": "length KS", "statistic": ln["statistic"], "p_value": ln["p_value"]},
                    {"test": "topic TVD", "statistic": t["tvd"], "p_value": t["p_value"]},
                    {"test": "new-topic share", "statistic": t["new_topic_rate"], "p_value": None},
                ],
                ["test", "statistic", "p_value"],
            )
        )
        parts.append(
            f"<p>{drift['distinct_recent_prompts']} distinct recent vs {drift['reference_prompts']} training prompts, "
            f"embedder {html.escape(drift['embedder'])}</p>"
        )
        img = plot_drift(drift, lengths)
        if img:
            parts.append(img)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: dict, out: str | Path, lengths: Optional[tuple[list, list]] = None) -> Path:
    return atomic_write_text(out, render_html(result, lengths))
