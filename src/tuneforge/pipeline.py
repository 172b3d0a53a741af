"""The stages in order. Each is also callable alone on a run directory (see cli.py)."""

from __future__ import annotations

import time
from typing import Any

from .data.prepare import prepare
from .lm.load import load_tokenizer
from .model.source import record_lineage
from .model.sources import resolve
from .recipe import Recipe
from .registry import maybe_register, record_parent
from .run import RunDir


def prepare_stage(recipe: Recipe, overwrite: bool = False) -> tuple[RunDir, dict]:
    run = RunDir.create(recipe, overwrite=overwrite)
    record_parent(run)  # a retraining run's parent: the model's current production version
    run.stage_started("prepare")
    try:
        source = resolve(recipe.model.base, recipe.model.cache_dir)
        record_lineage(run, source)  # base model, and the parent run when chained
        tok = load_tokenizer(source.path, recipe.model.trust_remote_code)
        estimate = None
        if recipe.data.estimate_time:
            from .train.estimate import recipe_time_estimate

            estimate = recipe_time_estimate(recipe, tok, source)  # resolved above: no second hash
        # KTO learns from its undesirable rows too (they carry no SFT loss, which would drop them)
        keep = recipe.objective.kind == "kto"
        card = prepare(
            recipe.data,
            run,
            tok,
            time_estimate=estimate,
            keep_undesirable=keep,
            objective=recipe.objective.kind,
            base=source,  # replay: the base model's own answers (cached per model)
        )
    except BaseException as exc:
        run.stage_finished("prepare", "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    run.stage_finished("prepare", rows={k: v["rows"] for k, v in card["splits"].items()})
    return run, card


def run_all(recipe: Recipe, overwrite: bool = False, log: Any = print) -> dict:
    """prepare → train → evaluate → export; returns a summary for the CLI to print."""
    from .deploy.export import export
    from .evaluate.runner import evaluate
    from .gates import GatesFailed
    from .train.dispatch import train_run as train

    t0 = time.time()
    log(f"[1/4] preparing data → {recipe.run_path()}")
    run, card = prepare_stage(recipe, overwrite)
    log("      " + ", ".join(f"{k}: {v['rows']} rows" for k, v in card["splits"].items()))
    log(f"[2/4] training ({recipe.strategy.kind} / {recipe.objective.kind}) on {recipe.model.base}")
    info = train(run)
    summary: dict[str, Any] = {"run": str(run.path), "train": info}
    if recipe.evaluation.enabled:
        log("[3/4] evaluating on the held-out test set")
        try:
            report = evaluate(run)
        except GatesFailed:  # a rejected run is still a version: the registry shows it, and refuses to promote it
            maybe_register(run, log=log)
            raise
        summary["eval"] = {k: v for k, v in report["task"].items()}
        summary["regression"] = report.get("regression")
        summary["unanswerable"] = report.get("unanswerable")  # hallucination rate base vs tuned
        summary["preference"] = report.get("preference")  # held-out pair accuracy (dpo/kto/orpo/reward)
    if recipe.export.enabled and recipe.objective.kind == "reward":
        # a reward model is already saved merged in run/model for PPO/GRPO; chat exports do not apply
        log(f"[4/4] export skipped: a reward model is used from {run.model_dir} (objective.reward_model: {run.path})")
    elif recipe.export.enabled:
        log("[4/4] exporting adapter + merged model, checking golden prompts")
        summary["export"] = export(run)
    summary["seconds"] = round(time.time() - t0, 1)
    run.update_manifest(wall_seconds=summary["seconds"])
    summary["registry"] = maybe_register(run, log=log)
    return summary
