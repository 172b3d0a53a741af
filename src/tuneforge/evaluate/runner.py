"""Stage 5 entry point: base vs tuned on the held-out test set (+ regression prompts)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ..data.validate import load_validated
from ..io import atomic_write_jsonl, read_jsonl
from ..model.load import load_trained
from ..recipe import EvaluationConfig
from ..run import RunDir
from .generate import generate
from .metrics import contains_all, exact_match, expected_of, mean_loss
from .report import plot_loss, write_report


def _base_context(model: Any) -> Any:
    """Turns the adapter off (PEFT) so the same weights answer as the base model."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


def score(outputs: list[str], rows: list[dict]) -> dict:
    exp = [expected_of(r) for r in rows]
    refs = [next((m["content"] for m in reversed(r["messages"]) if m["role"] == "assistant"), None) for r in rows]
    hits = [contains_all(o, e) if e else False for o, e in zip(outputs, exp)]
    em = [exact_match(o, r) for o, r in zip(outputs, refs) if r]
    return {"fact_accuracy": sum(hits) / max(len(hits), 1), "exact_match": sum(em) / len(em) if em else None,
            "examples": len(rows), "correct": hits}


def evaluate(run: RunDir, cfg: EvaluationConfig | None = None, compare_base: bool | None = None) -> dict:
    run.require()
    recipe = run.recipe()
    cfg = cfg or recipe.evaluation
    compare = cfg.compare_base if compare_base is None else compare_base
    t0 = time.time()
    run.stage_started("evaluate")
    model, tok, _ = load_trained(run)
    if compare and not hasattr(model, "disable_adapter"):
        compare = False  # a full fine-tune has no adapter to switch off; compare runs instead
    test = read_jsonl(run.split_file("test"))[: cfg.max_examples]
    val = read_jsonl(run.split_file("validation"))
    if not test:
        raise ValueError(f"{run.split_file('test')}: empty test split — give data.test or a data.test_fraction > 0")
    convs = [r["messages"] for r in test]
    variants = {"tuned": contextlib.nullcontext}
    if compare:
        variants = {"base": lambda: _base_context(model), **variants}
    task: dict[str, dict] = {}
    outputs: dict[str, list[str]] = {}
    for name, ctx in variants.items():
        with ctx():
            outputs[name] = generate(model, tok, convs, cfg.max_new_tokens, cfg.batch_size)
            s = score(outputs[name], test)
            for split, rows in (("test", test), ("validation", val)):
                lm = mean_loss(model, tok, rows, recipe.data.train_on)
                s[f"{split}_loss"], s[f"{split}_perplexity"] = lm["loss"], lm["perplexity"]
        task[name] = s
    samples = []
    for i, r in enumerate(test):
        s = {"question": next((m["content"] for m in r["messages"] if m["role"] == "user"), ""),
             "expected": expected_of(r)}
        for name in outputs:
            s[name], s[f"{name}_correct"] = outputs[name][i], task[name]["correct"][i]
        samples.append(s)
    for s in task.values():
        s.pop("correct")
    regression = None
    if cfg.regression_file:
        regression = _regression(model, tok, cfg, compare)
    plot = plot_loss(run.metrics_file, run.eval_dir / "loss.png")
    report = {"run": run.path.name, "task": task, "regression": regression, "samples": samples,
              "loss_plot": plot.name if plot else None, "seconds": round(time.time() - t0, 1)}
    atomic_write_jsonl(run.eval_dir / "samples.jsonl", samples)
    write_report(run.eval_dir, report)
    summary = {k: {m: v for m, v in task[k].items() if m in ("fact_accuracy", "test_loss")} for k in task}
    run.stage_finished("evaluate", metrics=summary, seconds=report["seconds"])
    return report


def _regression(model: Any, tok: Any, cfg: EvaluationConfig, compare: bool) -> dict:
    data = load_validated(cfg.regression_file, require_assistant=False)
    rows = data.rows
    convs = [r["messages"] for r in rows]
    res: dict[str, Any] = {"file": cfg.regression_file, "prompts": len(rows)}
    hits = {}
    variants = {"tuned": contextlib.nullcontext}
    if compare:
        variants = {"base": lambda: _base_context(model), **variants}
    for name, ctx in variants.items():
        with ctx():
            outs = generate(model, tok, convs, cfg.max_new_tokens, cfg.batch_size)
        hits[name] = [contains_all(o, expected_of(r) or []) for o, r in zip(outs, rows)]
        res[name] = sum(hits[name]) / max(len(rows), 1)
    res["regressed"] = [] if not compare else [
        convs[i][-1]["content"] for i in range(len(rows)) if hits["base"][i] and not hits["tuned"][i]]
    return res
