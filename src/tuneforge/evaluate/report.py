"""eval/report.md, eval/report.json and the loss-curve plot."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import atomic_write_json, atomic_write_text


def plot_loss(metrics_file: Path, out: Path) -> Path | None:
    """Train and validation loss against step; the lowest validation loss is marked."""
    if not metrics_file.is_file():
        return None
    rows = [json.loads(l) for l in metrics_file.read_text().splitlines() if l.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation loss")
        best = min(val, key=lambda p: p[1])
        ax.axvline(best[0], color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"best val {best[1]:.3f} @ step {best[0]}", best, textcoords="offset points", xytext=(5, 10))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def render_markdown(report: dict) -> str:
    models = [m for m in ("base", "tuned") if m in report["task"]]
    lines = [f"# Evaluation: {report['run']}", "", "## Task (held-out test set)", "",
             "| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for key, fmt in (("fact_accuracy", _pct), ("exact_match", _pct), ("test_loss", _num), ("test_perplexity", _num),
                     ("validation_loss", _num), ("validation_perplexity", _num)):
        lines.append(f"| {key} | " + " | ".join(fmt(report["task"][m].get(key)) for m in models) + " |")
    lines.append("| examples | " + " | ".join(str(report["task"][m]["examples"]) for m in models) + " |")
    if report.get("regression"):
        reg = report["regression"]
        lines += ["", "## Regression (general prompts the base model handles)", "",
                  f"- base accuracy {_pct(reg.get('base'))}, tuned accuracy {_pct(reg['tuned'])}",
                  f"- prompts the base got right and the tuned model got wrong: {len(reg['regressed'])}"]
        lines += [f"  - {q}" for q in reg["regressed"][:10]]
    lines += ["", "## Samples", "", "| question | expected | base | tuned |", "|---|---|---|---|"]
    for s in report["samples"][:10]:
        cells = [s["question"], ", ".join(s["expected"] or []), s.get("base", ""), s["tuned"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ")[:120] for c in cells) + " |")
    if report.get("loss_plot"):
        lines += ["", f"![loss curve]({report['loss_plot']})"]
    lines += ["", f"Evaluation took {report['seconds']} s.", ""]
    return "\n".join(lines)


def write_report(eval_dir: Path, report: dict) -> None:
    atomic_write_json(eval_dir / "report.json", report)
    atomic_write_text(eval_dir / "report.md", render_markdown(report))
