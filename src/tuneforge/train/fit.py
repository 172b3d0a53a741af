"""Stage 4, fine-tune: the one run-the-trainer loop and the one save path of every objective.

- `run_trainer(run, trainer, checkpoint, save)`: records the train stage in the manifest,
  trains (resuming from `checkpoint`), saves, and returns the summary every objective
  records (steps, losses, tokens/s, the distribution); the HF-Trainer objectives (sft,
  pretrain through `fit`; dpo, kto, orpo, reward, grpo through their TRL trainer) all use it.
- `save_result`: the trained adapter (adapter/), full model (model/) or merged model
  (model/, the reward model) + tokenizer. Under DeepSpeed ZeRO-3 or FSDP the weights are
  sharded over the processes: every process takes part in gathering them (accelerate's
  `get_state_dict`), rank 0 writes into a staging folder beside the result and renames it
  into place (`io.staging_dir` / `replace_dir`), and every process waits for the folder.
  PPO's own loop (one process, see `distributed.SINGLE_PROCESS_OBJECTIVES`) saves its
  result through it too, with its value head as an extra file.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..io import replace_dir, staging_dir
from ..recipe import TrainingConfig
from ..run import RunDir
from .checkpoint import skipped as ck_skipped
from .distributed import process_info, sum_over_processes
from .setup import ModelSetup, TrainingSetupError, is_peft, resume_step, standard_callbacks, training_arguments
from .trainer import TuneforgeTrainer, checkpoint_to_resume

# --------------------------------------------------------------------------- saving


def result_dir(run: RunDir, model: Any, merge: bool = False) -> Path:
    """adapter/ for an adapter saved alone; model/ for full weights or a merged model."""
    return run.model_dir if merge or not is_peft(model) else run.adapter_dir


def gathered_state_dict(trainer: Any) -> dict | None:
    """The full state dict when the weights are sharded (ZeRO-3, FSDP), else None (each process
    holds all of them). Collective: every process must call it."""
    sharded = getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False)
    return trainer.accelerator.get_state_dict(trainer.model_wrapped) if sharded else None


def merged_model(model: Any, state_dict: dict | None = None) -> Any:
    """`model` with its adapter merged into plain weights (a model that is no PEFT model is returned as is).

    With a gathered `state_dict` (sharded training) rank 0's own parameters are only shards,
    so the merge runs on a CPU replica built from the model's config and loaded with it.
    """
    if not is_peft(model):
        return model
    if state_dict is not None:
        model = _replica(model, state_dict)
    return model.merge_and_unload()


def _replica(model: Any, state_dict: dict) -> Any:
    from peft import get_peft_model

    base = model.get_base_model()
    # get_peft_model fills in the config it is given (e.g. resolved target modules): give it a copy
    replica = get_peft_model(
        type(base)._from_config(copy.deepcopy(base.config)), copy.deepcopy(model.peft_config["default"])
    )
    missing = set(replica.load_state_dict(state_dict, strict=False).missing_keys)
    # a gathered state dict may hold one name per tied tensor (embeddings / LM head): a missing
    # name is lost only when no other name of the same tensor was loaded
    names: dict[int, list[str]] = {}
    for name, t in replica.named_parameters(remove_duplicate=False):
        names.setdefault(id(t), []).append(name)
    lost = sorted(n for group in names.values() if all(n in missing for n in group) for n in group)
    if lost:
        raise RuntimeError(f"merging the gathered weights: {len(lost)} missing from the state dict, e.g. {lost[:3]}")
    return replica


def save_result(
    run: RunDir,
    tokenizer: Any,
    *,
    trainer: Any = None,
    model: Any = None,
    merge: bool = False,
    extra_files: Callable[[Path], None] | None = None,
) -> Path:
    """Save the trained result + tokenizer into the run, atomically; returns the folder.

    Give `trainer` (an HF Trainer; call this on every process) or `model` (a loop of tuneforge's
    own, one process). `merge`: adapters merged into a plain model in model/ (the reward model
    PPO/GRPO load). `extra_files(folder)` writes more files beside the weights (PPO's value head).
    The other result folder of the run is removed: a re-run with another strategy must not
    leave the old result (run.result_dir prefers adapter/).
    """
    if (trainer is None) == (model is None):
        raise ValueError("save_result: give exactly one of trainer= or model=")
    state_dict = gathered_state_dict(trainer) if trainer is not None else None
    if trainer is not None:
        model = trainer.accelerator.unwrap_model(trainer.model)
    out_dir = result_dir(run, model, merge)
    if trainer is None or trainer.is_world_process_zero():
        tmp = staging_dir(out_dir)
        try:
            if merge:
                plain = merged_model(model, state_dict)
                # the merged weights are the model itself; a full model's state dict is still the gathered one
                plain.save_pretrained(tmp, state_dict=None if plain is not model else state_dict)
            elif is_peft(model):
                # PeftModel.save_pretrained(state_dict=...) keeps only the adapter keys of a full state
                # dict; "default" only: TRL may have added a "ref" adapter copy (prompt learning)
                model.save_pretrained(tmp, state_dict=state_dict, selected_adapters=["default"])
            else:
                model.save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            if extra_files is not None:
                extra_files(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_dir(tmp, out_dir)
        stale = run.model_dir if out_dir == run.adapter_dir else run.adapter_dir
        shutil.rmtree(stale, ignore_errors=True)
    if trainer is not None:
        trainer.accelerator.wait_for_everyone()  # no process exits before the result exists
    return out_dir


# --------------------------------------------------------------------------- the loop


def last_metrics(log_history: list[dict], prefix: str) -> dict:
    """The last logged value of every metric starting with `prefix` (e.g. 'eval_').

    >>> last_metrics([{"eval_loss": 2.0}, {"loss": 1.0}, {"eval_loss": 1.5}], "eval_")
    {'eval_loss': 1.5}
    """
    out: dict = {}
    for h in log_history:
        out.update({k: round(v, 5) if isinstance(v, float) else v for k, v in h.items() if k.startswith(prefix)})
    return out


def _finished(trainer: Any, checkpoint: str | None) -> Any:
    """A resume from a checkpoint of the last step (the process died after it, before the result
    was saved): load it and train nothing. `Trainer.train` would run one step more than planned
    from there, so the result would differ from the uninterrupted run's."""
    if checkpoint is None:
        return None
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    if not state.max_steps or state.global_step < state.max_steps:
        return None
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    return TrainOutput(state.global_step, sum(losses) / len(losses) if losses else 0.0, {})


def run_trainer(
    run: RunDir,
    trainer: Any,
    checkpoint: str | None,
    save: Callable[[Any], Path],
    *,
    before_train: Callable[[Any], None] | None = None,
) -> dict:
    """Train (the stage recorded in the manifest), save through `save(trainer)`, return the summary.

    `before_train(trainer)` runs once the trainer exists (e.g. to measure the starting perplexity).
    The caller adds its own fields and records the summary with `run.stage_finished("train", **info)`.
    """
    skipped = ck_skipped(run.checkpoints_dir, checkpoint)  # damaged newer checkpoints, said before they rotate
    run.stage_started("train")
    t0 = time.time()
    try:
        if before_train is not None:
            before_train(trainer)
        result = _finished(trainer, checkpoint) or trainer.train(resume_from_checkpoint=checkpoint)
        elapsed = time.time() - t0
        out_dir = save(trainer)
    except BaseException as exc:
        run.stage_finished("train", "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    hist = trainer.state.log_history
    best = trainer.args.metric_for_best_model
    tokens = sum_over_processes(trainer, trainer.tokens_this_session())
    return {
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0, 3),
        "train_loss": round(result.training_loss, 5),
        "first_loss": next((h["loss"] for h in hist if "loss" in h), None),
        "last_loss": next((h["loss"] for h in reversed(hist) if "loss" in h), None),
        "last_train_metrics": {
            k: v for k, v in next((h for h in reversed(hist) if "loss" in h), {}).items() if k not in ("epoch", "step")
        },
        "eval_metrics": last_metrics(hist, "eval_"),
        "best_eval_loss": min((h["eval_loss"] for h in hist if "eval_loss" in h), default=None),
        "best_metric": {best: trainer.state.best_metric} if best else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "seconds": round(elapsed, 1),
        "steps_this_session": trainer.state.global_step - resume_step(checkpoint),
        "tokens_seen": tokens,
        "tokens_per_second": round(tokens / elapsed, 1) if elapsed > 0 else None,
        "resumed_from": checkpoint,
        "resume_warnings": skipped,
        "distributed": process_info(trainer),
        "output": str(out_dir.relative_to(run.path)),
    }


def lm_trainer(
    setup: ModelSetup,
    args: Any,
    train_ds: Any,
    eval_ds: Any,
    collator: Any,
    cfg: TrainingConfig,
    callbacks: list,
    logits_at_labels_only: bool,
) -> TuneforgeTrainer:
    """The causal-LM trainer of sft/pretrain (and of the time estimate, which times it)."""
    if cfg.kl_to_base and not is_peft(setup.model):  # Recipe.check refuses these recipes; a caller may not
        raise TrainingSetupError(
            f"training.kl_to_base={cfg.kl_to_base} needs an adapter (its base is the model with the adapter "
            f"off), and strategy.kind={setup.strategy} trains none — set training.kl_to_base=0"
        )
    return TuneforgeTrainer(
        model=setup.model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        callbacks=callbacks,
        autocast_bf16=setup.bf16,
        logits_at_labels_only=logits_at_labels_only,
        fused_ops=cfg.fused_ops,
        kl_to_base=cfg.kl_to_base,
        frozen_cache=cfg.frozen_cache,
    )


def fit(
    run: RunDir,
    setup: ModelSetup,
    cfg: TrainingConfig,
    train_ds: Any,
    eval_ds: Any,
    collator: Any,
    *,
    resume: bool = False,
    callbacks: list | None = None,
    logits_at_labels_only: bool = False,
    metrics: Iterable[str] = ("eval_loss",),
    before_train: Callable[[Any], None] | None = None,
) -> tuple[Any, dict]:
    """Train a causal LM with TuneforgeTrainer on tokenised examples and save the result; (trainer, info).

    The caller records `info` with `run.stage_finished("train", **info)`.
    """
    checkpoint = checkpoint_to_resume(run.checkpoints_dir, resume)
    args = training_arguments(cfg, run.checkpoints_dir, eval_ds is not None, metrics, setup.packing)
    cbs = standard_callbacks(run, cfg, checkpoint) + list(callbacks or [])
    trainer = lm_trainer(setup, args, train_ds, eval_ds, collator, cfg, cbs, logits_at_labels_only)
    info = run_trainer(
        run, trainer, checkpoint, lambda t: save_result(run, setup.tokenizer, trainer=t), before_train=before_train
    )
    info.update(
        setup.info(),
        packing=setup.packing,
        fused_ops=trainer.fused_count,
        frozen_cache=trainer.frozen_cache_info(),
        logits_at_labels_only=logits_at_labels_only,
        tracking=list(cfg.tracking),
    )
    return trainer, info
