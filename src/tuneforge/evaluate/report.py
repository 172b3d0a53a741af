"""eval/report.md and eval/report.json: one table per suite, base vs tuned side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_text
from .plots import plot_loss  # noqa: F401 (re-export: earlier code imported it from here)
from .text_metrics import format_expected


def pct(x: Any) -> str:
    """A fraction as a percentage.

    >>> pct(0.125)
    '12.5%'
    """
    return "-" if not isinstance(x, (int, float)) else f"{100 * x:.1f}%"


def num(x: Any) -> str:
    return "-" if not isinstance(x, (int, float)) else f"{x:.4f}"


def points(x: Any) -> str:
    """A difference of fractions in percentage points, signed.

    >>> points(-0.05)
    '-5.0 pts'
    """
    return "-" if not isinstance(x, (int, float)) else f"{100 * x:+.1f} pts"


def cell(text: Any, width: int = 120) -> str:
    """Text made safe for one markdown table cell."""
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")[:width]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


TASK_ROWS = (
    ("fact_accuracy", pct),
    ("exact_match", pct),
    ("token_f1", num),
    ("bleu", num),
    ("rouge1", num),
    ("rouge2", num),
    ("rougeL", num),
    ("classification_accuracy", pct),
    ("macro_f1", num),
    ("json_valid", pct),
    ("schema_valid", pct),
    ("token_accuracy", pct),
    ("test_loss", num),
    ("test_perplexity", num),
    ("validation_loss", num),
    ("validation_perplexity", num),
    ("abstain_rate", pct),
)


def _task(task: dict) -> list[str]:
    models = [m for m in ("base", "tuned") if m in task]
    rows = []
    for key, fmt in TASK_ROWS:
        vals = [task[m].get(key) for m in models]
        if all(v is None for v in vals):
            continue
        delta = ""
        if len(models) == 2 and all(isinstance(v, (int, float)) for v in vals):
            delta = points(vals[1] - vals[0]) if fmt is pct else f"{vals[1] - vals[0]:+.4f}"
        rows.append([key] + [fmt(v) for v in vals] + ([delta] if len(models) == 2 else []))
    rows.append(["examples"] + [str(task[m]["examples"]) for m in models] + ([""] if len(models) == 2 else []))
    header = ["metric"] + models + (["tuned − base"] if len(models) == 2 else [])
    return ["## Task (held-out test set)", ""] + table(header, rows)


def _regression(reg: dict) -> list[str]:
    models = [m for m in ("base", "tuned") if m in reg]
    lines = [
        "## Regression (general prompts the base model handles)",
        "",
        *table(["metric"] + models, [["accuracy"] + [pct(reg[m]) for m in models]]),
        "",
    ]
    if "drop" in reg:
        lines.append(
            f"Change base → tuned: {points(-reg['drop'])}; retention of what the base handles: "
            f"{pct(reg.get('retention'))}; regressed prompts: {len(reg['regressed'])}, "
            f"improved: {len(reg['improved'])}."
        )
        lines += [f"- regressed: {cell(q)}" for q in reg["regressed"][:10]]
    return lines


def _safety(saf: dict) -> list[str]:
    models = [m for m in ("base", "tuned") if m in saf]
    rows = [
        ["refusal rate (harmful, higher is safer)"] + [pct(saf[m]["refusal_rate"]) for m in models],
        ["over-refusal rate (benign, lower is better)"] + [pct(saf[m]["over_refusal_rate"]) for m in models],
    ]
    lines = [
        "## Safety (harmful probes must be refused)",
        "",
        f"{saf['harmful']} harmful and {saf['benign']} benign probes from `{saf.get('file', '?')}`; "
        "refusals detected by phrase matching on the reply's opening.",
        "",
        *table(["metric"] + models, rows),
    ]
    if saf.get("lost_refusals"):
        lines += ["", f"Harmful prompts the base refused but the tuned model answered: {len(saf['lost_refusals'])}"]
        lines += [f"- {cell(q)}" for q in saf["lost_refusals"][:10]]
    if saf.get("tuned_by_category"):
        lines += [
            "",
            "Tuned refusal rate by category: "
            + ", ".join(f"{c} {pct(v)}" for c, v in saf["tuned_by_category"].items()),
        ]
    return lines


def _unanswerable(una: dict) -> list[str]:
    models = [m for m in ("base", "tuned") if m in una]
    rows = [
        ["hallucination rate (answers anyway, lower is better)"] + [pct(una[m]["hallucination_rate"]) for m in models],
        ["abstain rate (says it does not know)"] + [pct(una[m]["abstain_rate"]) for m in models],
    ]
    lines = [
        "## Unanswerable (domain questions the data does not answer)",
        "",
        f"{una['prompts']} questions from `{una.get('file', '?')}`; declining detected by phrase matching.",
        "",
        *table(["metric"] + models, rows),
    ]
    if una.get("new_hallucinations"):
        lines += ["", f"Declined by the base, answered by the tuned model: {len(una['new_hallucinations'])}"]
        lines += [f"- {cell(q)}" for q in una["new_hallucinations"][:10]]
    return lines


def _generalisation(gen: dict) -> list[str]:
    tr, pa = gen["training_phrasing"], gen["paraphrase"]
    rows = [
        ["fact accuracy", pct(tr["fact_accuracy"]), pct(pa["fact_accuracy"]), points(gen["gap"])],
        ["token F1", num(tr["token_f1"]), num(pa["token_f1"]), num(gen["f1_gap"])],
        ["examples (graded)", f"{tr['examples']} ({tr['graded']})", f"{pa['examples']} ({pa['graded']})", ""],
    ]
    lines = [
        "## Generalisation (tuned model: training phrasing vs held-out paraphrases)",
        "",
        *table(["metric", "training phrasing", "paraphrases", "gap"], rows),
    ]
    mem = gen.get("memorisation") or {}
    if mem:
        mrows = [
            [suite, m, pct(v["copied_rate"]), num(v["mean_overlap"])]
            for suite, by_model in mem.items()
            if suite != "n"
            for m, v in by_model.items()
        ]
        lines += [
            "",
            f"Memorisation: verbatim overlap of replies with training answers (word {mem['n']}-grams). "
            "Copying is expected on the task; on general prompts it means parroting.",
            "",
            *table(["suite", "model", "copies a whole training answer", "mean n-gram overlap"], mrows),
        ]
    return lines


def _gates(g: dict) -> list[str]:
    verdict = "**PASSED**" if g["passed"] else "**REJECTED** (unmet gates mark the run rejected)"
    rows = [
        [
            cell(r["text"] + (" (forgetting budget)" if r.get("budget") else "")),
            "-" if r["actual"] is None else f"{r['actual']:.4g}",
            ("skipped" if r["reason"].startswith("skipped") else "yes") if r["passed"] else "NO",
        ]
        for r in g["results"]
    ]
    return [f"## Gates: {verdict}", "", *table(["gate", "measured", "met"], rows)]


def render_markdown(report: dict) -> str:
    lines = [f"# Evaluation: {report['run']}", ""]
    if report.get("gates"):
        lines += _gates(report["gates"]) + [""]
    lines += _task(report["task"]) + [""]
    suites = (
        ("regression", _regression),
        ("unanswerable", _unanswerable),
        ("safety", _safety),
        ("generalisation", _generalisation),
    )
    for key, fn in suites:
        if report.get(key):
            lines += fn(report[key]) + [""]
    plots = report.get("plots") or {}
    for name, title in (("metrics", "metric bars"), ("loss", "loss curve")):
        if plots.get(name):
            lines += [f"![{title}]({plots[name]})", ""]
    task_samples = [s for s in report.get("samples", []) if s.get("suite", "task") == "task"]
    models = [m for m in ("base", "tuned") if task_samples and m in task_samples[0]]
    rows = [
        [cell(s["question"]), cell(format_expected(s["expected"]))]
        + [cell(("✓ " if s.get(f"{m}_correct") else "✗ ") + s[m]) for m in models]
        for s in task_samples[:10]
    ]
    lines += [
        "## Samples (task)",
        "",
        *table(["question", "expected"] + models, rows),
        "",
        f"All samples of every suite: samples.jsonl. Evaluation took {report['seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def write_report(eval_dir: Path, report: dict) -> None:
    atomic_write_json(eval_dir / "report.json", report)
    atomic_write_text(eval_dir / "report.md", render_markdown(report))
