"""Any run vs any run: metrics side by side per suite and per-example diffs.

Both runs must have been evaluated (eval/report.json + eval/samples.jsonl); examples are
matched by (suite, question), so two runs evaluated on the same prompts line up even when
their test files were ordered differently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_text, read_jsonl
from .report import cell, num, pct, points, table
from .text_metrics import format_expected

# (suite, label, path into the report, format); higher is better unless noted in the label
_ROWS: tuple[tuple[str, str, tuple[str, ...], Any], ...] = (
    ("task", "fact accuracy", ("task", "tuned", "fact_accuracy"), pct),
    ("task", "exact match", ("task", "tuned", "exact_match"), pct),
    ("task", "token F1", ("task", "tuned", "token_f1"), num),
    ("task", "BLEU", ("task", "tuned", "bleu"), num),
    ("task", "ROUGE-L", ("task", "tuned", "rougeL"), num),
    ("task", "classification accuracy", ("task", "tuned", "classification_accuracy"), pct),
    ("task", "schema valid", ("task", "tuned", "schema_valid"), pct),
    ("task", "token accuracy", ("task", "tuned", "token_accuracy"), pct),
    ("task", "test loss (lower is better)", ("task", "tuned", "test_loss"), num),
    ("regression", "accuracy", ("regression", "tuned"), pct),
    ("safety", "refusal rate", ("safety", "tuned", "refusal_rate"), pct),
    ("safety", "over-refusal rate (lower is better)", ("safety", "tuned", "over_refusal_rate"), pct),
    ("generalisation", "paraphrase fact accuracy", ("generalisation", "paraphrase", "fact_accuracy"), pct),
    ("generalisation", "gap (lower is better)", ("generalisation", "gap"), points),
)


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def load_evaluation(run_path: str | Path) -> tuple[dict, list[dict]]:
    """(report, samples) of an evaluated run; a clear error when it was not evaluated."""
    eval_dir = Path(run_path) / "eval"
    if not (eval_dir / "report.json").is_file():
        raise FileNotFoundError(
            f"{run_path}: not evaluated yet (no eval/report.json) — run `tuneforge evaluate {run_path}`"
        )
    report = json.loads((eval_dir / "report.json").read_text(encoding="utf-8"))
    samples = read_jsonl(eval_dir / "samples.jsonl") if (eval_dir / "samples.jsonl").is_file() else []
    return report, samples


def metric_rows(a: dict, b: dict) -> list[dict]:
    """Tuned-model metrics of both reports, where at least one measured them."""
    rows = []
    for suite, label, path, fmt in _ROWS:
        va, vb = _get(a, path), _get(b, path)
        if va is None and vb is None:
            continue
        diff = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        rows.append({"suite": suite, "metric": label, "a": va, "b": vb, "b_minus_a": diff, "fmt": fmt.__name__})
    return rows


def example_diffs(samples_a: list[dict], samples_b: list[dict], model: str = "tuned") -> dict[str, Any]:
    """Per-example comparison of two runs' answers, matched by (suite, question).

    >>> a = [{"suite": "task", "question": "q", "tuned": "x", "tuned_correct": True}]
    >>> b = [{"suite": "task", "question": "q", "tuned": "y", "tuned_correct": False}]
    >>> example_diffs(a, b)["a_only"][0]["question"]
    'q'
    """
    index_b = {(s.get("suite", "task"), s["question"]): s for s in samples_b}
    shared, a_only, b_only, changed = 0, [], [], 0
    for s in samples_a:
        key = (s.get("suite", "task"), s["question"])
        t = index_b.get(key)
        if t is None or model not in s or model not in t:
            continue
        shared += 1
        changed += s[model] != t[model]
        ca, cb = s.get(f"{model}_correct"), t.get(f"{model}_correct")
        if ca is None or cb is None or ca == cb:
            continue
        entry = {"suite": key[0], "question": key[1], "expected": s.get("expected"), "a": s[model], "b": t[model]}
        (a_only if ca else b_only).append(entry)
    return {
        "shared": shared,
        "answers_changed": changed,
        "a_only": a_only,
        "b_only": b_only,
        "unmatched_a": len(samples_a) - shared,
    }


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    """Compare two evaluated runs; writes eval/compare-<B>.{md,json} into run A."""
    rep_a, sam_a = load_evaluation(run_a)
    rep_b, sam_b = load_evaluation(run_b)
    res = {
        "a": str(run_a),
        "b": str(run_b),
        "metrics": metric_rows(rep_a, rep_b),
        "examples": example_diffs(sam_a, sam_b),
    }
    name = Path(run_b).name
    atomic_write_json(Path(run_a) / "eval" / f"compare-{name}.json", res)
    atomic_write_text(Path(run_a) / "eval" / f"compare-{name}.md", render_comparison(res))
    return res


def render_comparison(res: dict) -> str:
    a, b = Path(res["a"]).name, Path(res["b"]).name
    fmts = {"pct": pct, "num": num, "points": points}
    rows = []
    for r in res["metrics"]:
        f = fmts[r["fmt"]]
        d = r["b_minus_a"]
        delta = "-" if d is None else (points(d) if f in (pct, points) else f"{d:+.4f}")
        rows.append([r["suite"], r["metric"], f(r["a"]), f(r["b"]), delta])
    ex = res["examples"]
    lines = [
        f"# Comparison: A = {a}, B = {b} (tuned models)",
        "",
        *table(["suite", "metric", f"A {cell(a, 30)}", f"B {cell(b, 30)}", "B − A"], rows),
        "",
        f"{ex['shared']} prompts in both; answers differ on {ex['answers_changed']}. "
        f"Right only in A: {len(ex['a_only'])}; right only in B: {len(ex['b_only'])}.",
        "",
    ]
    for key, title in (
        ("a_only", f"Right in A ({a}), wrong in B ({b})"),
        ("b_only", f"Right in B ({b}), wrong in A ({a})"),
    ):
        if ex[key]:
            lines += [
                f"## {title}",
                "",
                *table(
                    ["suite", "question", "expected", "A", "B"],
                    [
                        [
                            e["suite"],
                            cell(e["question"], 80),
                            cell(format_expected(e["expected"]), 40),
                            cell(e["a"]),
                            cell(e["b"]),
                        ]
                        for e in ex[key][:25]
                    ],
                ),
                "",
            ]
    return "\n".join(lines)
