"""Stage 5 entry point: base vs tuned on every suite, report, plots, gates.

Order of work per model variant (base = the same weights with the adapter switched off):
task answers + test/validation loss, regression prompts, safety probes. Generalisation
re-asks a sample of training prompts to the tuned model only. Everything is batched
greedy generation, so evaluation costs a few forward passes per prompt.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..assets import asset
from ..data.validate import load_validated
from ..gates import GatesFailed, check_gates
from ..io import atomic_write_jsonl, read_jsonl
from ..lm.generate import generate
from ..model.load import load_trained
from ..recipe import EvaluationConfig
from ..run import RunDir
from .abstain import abstain_rate, score_unanswerable
from .metrics import mean_loss
from .plots import plot_loss, plot_metric_bars
from .preference import append_markdown, evaluate_reward, pair_logps, pairs_from_rows, preference_report
from .report import write_report
from .suites import (
    samples,
    score_generalisation,
    score_memorisation,
    score_regression,
    score_safety,
    score_task,
    spread_sample,
)
from .text_metrics import question_of, reference_of

Variants = dict[str, Callable[[], Any]]


def _base_context(model: Any) -> Any:
    """Turns the adapter off (PEFT) so the same weights answer as the base model."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


@contextlib.contextmanager
def _merged(model: Any) -> Any:
    """Adapter folded into the weights while inside: the tuned model generates without the
    extra LoRA matmuls per layer (much faster decoding), and answers as the merged export does."""
    if not hasattr(model, "merge_adapter"):
        yield
        return
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()


def _prompts(path: str, what: str) -> list[dict]:
    """Rows of a user-supplied prompt file (validated; rows need no assistant reply)."""
    data = load_validated(path, require_assistant=False)
    if not data.rows:
        raise ValueError(f"{path}: no usable rows for the {what} suite — check the file (tuneforge data inspect)")
    return data.rows


def regression_rows(cfg: EvaluationConfig) -> list[dict]:
    """The shipped general suite (unless `regression_suite` is off) plus the user's own file;
    a prompt in both is asked once (the user's expected answer wins)."""
    own = _prompts(cfg.regression_file, "regression") if cfg.regression_file else []
    shipped = _prompts(str(asset("general_suite.jsonl")), "regression") if cfg.regression_suite else []
    seen = {question_of(r).strip().lower() for r in own}
    return own + [r for r in shipped if question_of(r).strip().lower() not in seen]


def _load_schema(path: str | None) -> dict | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"evaluation.json_schema: {path} not found — give the path of a JSON schema file")
    return json.loads(p.read_text(encoding="utf-8"))


def _strip(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def evaluate(
    run: RunDir, cfg: EvaluationConfig | None = None, compare_base: bool | None = None, enforce_gates: bool = True
) -> dict:
    """Evaluate a trained run on every configured suite; write eval/ and check the gates.

    Raises GatesFailed (after writing the report and marking the run rejected) when a gate
    in `evaluation.gates` is unmet and `enforce_gates` is on.
    """
    run.require()
    recipe = run.recipe()
    cfg = cfg or recipe.evaluation
    if recipe.objective.kind == "reward":  # a scorer, not a generator: pairwise accuracy only
        return evaluate_reward(run, cfg)
    compare = cfg.compare_base if compare_base is None else compare_base
    t0 = time.time()
    test = read_jsonl(run.split_file("test"))[: cfg.max_examples]
    if not test:
        raise ValueError(f"{run.split_file('test')}: empty test split — give data.test or a data.test_fraction > 0")
    val = read_jsonl(run.split_file("validation"))
    train = read_jsonl(run.split_file("train"))
    schema = _load_schema(cfg.json_schema)
    reg_rows = regression_rows(cfg)
    una_rows = _prompts(cfg.unanswerable_file, "unanswerable") if cfg.unanswerable_file else []
    safety_rows = _prompts(cfg.safety_file, "safety") if cfg.safety_file else []
    para_rows = _prompts(cfg.paraphrase_file, "generalisation") if cfg.paraphrase_file else test
    pairs = pairs_from_rows(test)  # held-out preference pairs (dpo/kto/orpo data): preference accuracy
    run.stage_started("evaluate")
    try:
        model, tok, _ = load_trained(run)
        if compare and not hasattr(model, "disable_adapter"):
            compare = False  # a full fine-tune has no adapter to switch off; compare runs instead (--compare)
        variants: Variants = {"tuned": lambda: _merged(model)}
        if compare:
            variants = {"base": lambda: _base_context(model), **variants}

        def gen(rows: list[dict]) -> list[str]:
            return generate(model, tok, [r["messages"] for r in rows], cfg.max_new_tokens, cfg.batch_size)

        out: dict[str, dict[str, list[str]]] = {"task": {}, "regression": {}, "safety": {}, "unanswerable": {}}
        suites = {"task": test, "regression": reg_rows, "safety": safety_rows, "unanswerable": una_rows}
        train_rows = (
            spread_sample([r for r in train if reference_of(r)], cfg.generalisation_examples)
            if cfg.generalisation and train
            else []
        )
        task: dict[str, dict] = {}
        pref_logps: dict[str, dict] = {}
        for name, ctx in variants.items():
            with ctx():
                if pairs:
                    pref_logps[name] = pair_logps(model, tok, pairs, cfg.batch_size)
                # every suite in one generation call: prompts are batched by length across suites,
                # so a variant pays for one tail of a few long answers, not one per suite
                own_para = cfg.generalisation and train and para_rows is not test
                extra = {"train": train_rows, "paraphrase": para_rows if own_para else []}
                parts = {**suites, **(extra if name == "tuned" else {})}
                answers = gen([r for rows in parts.values() for r in rows])
                for suite, rows in parts.items():
                    answers_of, answers = answers[: len(rows)], answers[len(rows) :]
                    if rows or suite == "task":
                        out.setdefault(suite, {})[name] = answers_of
                task[name] = score_task(out["task"][name], test, schema)
                task[name]["abstain_rate"] = abstain_rate(out["task"][name])  # over-abstention
                for split, rows in (("test", test), ("validation", val)):
                    lm = mean_loss(model, tok, rows, recipe.data.train_on)
                    task[name][f"{split}_loss"], task[name][f"{split}_perplexity"] = lm["loss"], lm["perplexity"]
                    if split == "test":
                        task[name]["token_accuracy"] = lm["token_accuracy"]
        regression = score_regression(out["regression"], reg_rows) if reg_rows else None
        safety = score_safety(out["safety"], safety_rows) if safety_rows else None
        unanswerable = score_unanswerable(out["unanswerable"], una_rows) if una_rows else None
        train_out, para_gen = out.pop("train", {}).get("tuned", []), out.pop("paraphrase", {}).get("tuned", [])
        generalisation, gen_samples = None, []
        if cfg.generalisation and train:
            para_out = out["task"]["tuned"] if para_rows is test else para_gen
            generalisation = score_generalisation(train_out, train_rows, para_out, para_rows)
            generalisation["memorisation"] = score_memorisation(
                {k: v for k, v in out.items() if v},
                [a for r in train if (a := reference_of(r))],
                cfg.memorisation_ngram,
            )
            gen_samples = samples("generalisation", train_rows, {"tuned": train_out}, {})
    except BaseException as exc:
        run.stage_finished("evaluate", "failed", error=f"{type(exc).__name__}: {exc}")
        raise

    all_samples = samples("task", test, out["task"], {m: s["correct"] for m, s in task.items()})
    if regression:
        all_samples += samples("regression", reg_rows, out["regression"], regression["correct"])
    if safety:
        all_samples += samples("safety", safety_rows, out["safety"], safety["correct"])
    if unanswerable:
        all_samples += samples("unanswerable", una_rows, out["unanswerable"], unanswerable["correct"])
    all_samples += gen_samples
    report: dict[str, Any] = {
        "run": run.path.name,
        "models": list(variants),
        "task": {m: _strip(s, "correct", "f1") for m, s in task.items()},
        "regression": regression
        and {"file": cfg.regression_file, "shipped_suite": cfg.regression_suite, **_strip(regression, "correct")},
        "unanswerable": unanswerable and {"file": cfg.unanswerable_file, **_strip(unanswerable, "correct")},
        "safety": safety and {"file": cfg.safety_file, **_strip(safety, "correct")},
        "generalisation": generalisation,
        "preference": preference_report(pref_logps) if pref_logps else None,
        "settings": {
            "max_new_tokens": cfg.max_new_tokens,
            "batch_size": cfg.batch_size,
            "test_examples": len(test),
            "json_schema": cfg.json_schema,
        },
        "samples": all_samples,
    }
    loss_png = plot_loss(run.metrics_file, run.eval_dir / "loss.png")
    bars_png = plot_metric_bars(report, run.eval_dir / "metrics.png")
    report["plots"] = {"loss": loss_png and loss_png.name, "metrics": bars_png and bars_png.name}
    report["loss_plot"] = report["plots"]["loss"]  # kept for readers of the first report layout
    budget = cfg.budget.gates()
    gates = check_gates(cfg.gates, report, budget) if cfg.gates or budget else None
    report["gates"] = gates
    report["seconds"] = round(time.time() - t0, 1)
    atomic_write_jsonl(run.eval_dir / "samples.jsonl", all_samples)
    write_report(run.eval_dir, report)
    append_markdown(run.eval_dir, report["preference"])
    summary = {k: {m: v for m, v in task[k].items() if m in ("fact_accuracy", "token_f1", "test_loss")} for k in task}
    if report["preference"]:
        summary["preference_accuracy"] = {m: report["preference"][m]["accuracy"] for m in variants}
    run.stage_finished("evaluate", metrics=summary, seconds=report["seconds"])
    if gates is not None:
        run.update_manifest(
            gates={"passed": gates["passed"], "unmet": [r["text"] for r in gates["results"] if not r["passed"]]}
        )
        if not gates["passed"]:
            run.update_manifest(status="rejected")
            if enforce_gates:
                raise GatesFailed(run.path.name, gates, report)
    return report
