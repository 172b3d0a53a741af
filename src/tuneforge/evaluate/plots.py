"""Report plots: the loss curve (overfitting point marked) and base-vs-tuned metric bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..train.callbacks import read_metrics


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    _pyplot().close(fig)
    tmp.replace(out)
    return out


def overfitting_point(val: list[tuple[int, float]]) -> tuple[int, float, bool] | None:
    """(step, loss, overfit) of the lowest validation loss; overfit when a later one is higher.

    Past that step the model fits the training set better while held-out loss rises.

    >>> overfitting_point([(10, 2.0), (20, 1.5), (30, 1.7)])
    (20, 1.5, True)
    """
    if not val:
        return None
    i = min(range(len(val)), key=lambda j: val[j][1])
    return val[i][0], val[i][1], any(v > val[i][1] for _, v in val[i + 1 :])


def plot_loss(metrics_file: Path, out: Path) -> Path | None:
    """Train and validation loss against step; the overfitting point (or best step) is marked."""
    if not metrics_file.is_file():
        return None
    rows = read_metrics(metrics_file)  # a torn last line (killed mid-append) is skipped
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if not train and not val:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation loss")
        step, loss, overfit = overfitting_point(val)
        ax.axvline(step, color="red" if overfit else "grey", linestyle="--", linewidth=1)
        text = f"overfitting after step {step} (val {loss:.3f})" if overfit else f"best val {loss:.3f} @ step {step}"
        ax.annotate(text, (step, loss), textcoords="offset points", xytext=(5, 10))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)


def bar_metrics(report: dict) -> dict[str, dict[str, float]]:
    """{label: {model: value}} of the fraction-valued headline metrics per suite.

    >>> bar_metrics({"task": {"tuned": {"fact_accuracy": 0.9}}})
    {'task fact accuracy': {'tuned': 0.9}}
    """
    bars: dict[str, dict[str, float]] = {}

    def add(label: str, by_model: dict[str, Any]) -> None:
        vals = {m: v for m, v in by_model.items() if isinstance(v, (int, float))}
        if vals:
            bars[label] = vals

    task = report.get("task") or {}
    for key in (
        "fact_accuracy",
        "exact_match",
        "token_f1",
        "bleu",
        "rougeL",
        "token_accuracy",
        "classification_accuracy",
        "schema_valid",
    ):
        add(f"task {key.replace('_', ' ')}", {m: s.get(key) for m, s in task.items()})
    reg = report.get("regression") or {}
    add("regression accuracy", {m: reg.get(m) for m in ("base", "tuned")})
    saf = report.get("safety") or {}
    add("safety refusal rate", {m: (saf.get(m) or {}).get("refusal_rate") for m in ("base", "tuned")})
    return bars


def plot_metric_bars(report: dict, out: Path) -> Path | None:
    """Grouped bars, base vs tuned, for every headline metric in the report (all in [0, 1])."""
    bars = bar_metrics(report)
    if not bars:
        return None
    plt = _pyplot()
    labels = list(bars)
    models = [m for m in ("base", "tuned") if any(m in v for v in bars.values())]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 4))
    for j, m in enumerate(models):
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(labels))]
        ys = [bars[lab].get(m, 0.0) for lab in labels]
        rects = ax.bar(xs, ys, width, label=m, color=("#9aa5b1" if m == "base" else "#2f7ed8"))
        ax.bar_label(rects, labels=[f"{y:.2f}" for y in ys], fontsize=7, padding=1)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score (fraction)")
    ax.set_title(f"{report.get('run', '')}: base vs tuned")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)
