"""Quality of trained runs on extra held-out sets: facts, paraphrases, forgetting, hallucination.

    python bench/quality.py runs/demo [runs/other ...] \
        [--paraphrases examples/demo/heldout_emails.jsonl] [--unanswerable examples/demo/unanswerable.jsonl]

Re-evaluates each run with its own recipe plus these files (the shipped general suite is
always on) and prints one table: shipped-test fact accuracy, the second paraphrase set's fact
accuracy, general regression base → tuned, hallucination rate on unanswerables base → tuned,
over-abstention on the test set. Prints the CPU it ran on, like every bench here. The runs'
eval/ folders are rewritten (the report then includes these files).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path


def cpu_line() -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)
                break
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} flags: {flags or '?'}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--paraphrases", default="examples/demo/heldout_emails.jsonl")
    ap.add_argument("--unanswerable", default="examples/demo/unanswerable.jsonl")
    ap.add_argument("--json", type=Path, help="Also write the table as JSON here.")
    ap.add_argument("--read", action="store_true", help="Read the runs' existing eval/report.json; evaluate nothing.")
    args = ap.parse_args(argv)

    from tuneforge.evaluate.runner import evaluate
    from tuneforge.run import RunDir

    print(cpu_line())
    rows = []
    for path in args.runs:
        run = RunDir(path)
        if args.read:
            rep = json.loads((run.eval_dir / "report.json").read_text())
        else:
            cfg = run.recipe().evaluation.model_copy(
                update={
                    "paraphrase_file": args.paraphrases,
                    "unanswerable_file": args.unanswerable,
                    "regression_suite": True,
                    "generalisation": True,
                }
            )
            rep = evaluate(run, cfg, compare_base=True, enforce_gates=False)
        manifest = json.loads(run.manifest_file.read_text())
        reg, una = rep["regression"] or {}, rep["unanswerable"] or {}
        gen = rep["generalisation"] or {}
        rows.append(
            {
                "run": path.name,
                "test_fact_accuracy": rep["task"]["tuned"]["fact_accuracy"],
                "paraphrase_fact_accuracy": gen.get("paraphrase", {}).get("fact_accuracy"),
                "regression_base": reg.get("base"),
                "regression_tuned": reg.get("tuned"),
                "regression_drop": reg.get("drop"),
                "hallucination_base": (una.get("base") or {}).get("hallucination_rate"),
                "hallucination_tuned": (una.get("tuned") or {}).get("hallucination_rate"),
                "over_abstain": rep["task"]["tuned"].get("abstain_rate"),
                "eval_seconds": rep["seconds"],
                "train_seconds": ((manifest.get("stages") or {}).get("train") or {}).get("seconds"),
                "gates_passed": (rep.get("gates") or {}).get("passed"),
            }
        )

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    head = (
        "run | test facts | paraphrases | general base→tuned (drop) | hallucination base→tuned | over-abstain"
        " | train s | eval s | gates"
    )
    print(head)
    for r in rows:
        print(
            f"{r['run']} | {pct(r['test_fact_accuracy'])} | {pct(r['paraphrase_fact_accuracy'])} | "
            f"{pct(r['regression_base'])}→{pct(r['regression_tuned'])} ({pct(r['regression_drop'])}) | "
            f"{pct(r['hallucination_base'])}→{pct(r['hallucination_tuned'])} | {pct(r['over_abstain'])}"
            f" | {r['train_seconds']} | {r['eval_seconds']} | {r['gates_passed']}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
