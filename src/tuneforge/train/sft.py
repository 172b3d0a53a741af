"""Supervised fine-tuning (instruction tuning) on chat data: the stage-4 entry point.

The pieces every HF-Trainer objective shares live here too: `training_arguments`,
`tracking_callbacks`, `setup_model` (source → tokenizer → model with its strategy) and
`fit` (checkpoints, trainer, result saved atomically, the info the manifest records);
`train/pretrain.py` reuses them with its own data.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..dist import is_main_process
from ..errors import TuneforgeError
from ..io import read_jsonl
from ..lm.collator import PackedCollator, PadCollator
from ..lm.load import load_tokenizer, set_threads
from ..lm.template import tokenize_messages
from ..model.device import device_type, use_bf16
from ..model.load import load_for_training
from ..model.source import ModelSource, record_lineage
from ..model.sources import resolve
from ..model.strategies import check_training_compat, is_adapter, param_counts
from ..recipe import Recipe, TrainingConfig
from ..run import RunDir
from . import attention
from .callbacks import MetricsJsonlCallback
from .distributed import process_info, save_trained, sum_over_processes
from .trainer import ResumeError, TuneforgeTrainer, checkpoint_to_resume  # noqa: F401 (ResumeError: public here)


class TrainingSetupError(TuneforgeError, ValueError):
    """training.* options that cannot work together (or a tracker that is not installed)."""


def tokenised_split(path: Path, tokenizer: Any, train_on: str) -> Any:
    """A `datasets.Dataset` of input_ids/labels for one prepared split (None when empty)."""
    from datasets import Dataset

    rows = [r for r in read_jsonl(path) if any(m["role"] == "assistant" for m in r["messages"])]
    if not rows:
        return None
    enc = [tokenize_messages(tokenizer, r["messages"], train_on) for r in rows]
    return Dataset.from_list([{**e, "length": len(e["input_ids"])} for e in enc])


def best_metric(cfg: TrainingConfig) -> tuple[str, bool]:
    """(metric name as the Trainer logs it, whether greater is better) for early stopping / best checkpoint.

    >>> best_metric(TrainingConfig(early_stopping_metric="loss"))
    ('eval_loss', False)
    """
    name = cfg.early_stopping_metric
    name = name if name.startswith("eval_") else f"eval_{name}"
    greater = cfg.greater_is_better if cfg.greater_is_better is not None else not name.endswith("loss")
    return name, greater


def training_arguments(
    cfg: TrainingConfig,
    output_dir: Path,
    has_eval: bool,
    metrics: Iterable[str] | None = None,
    packing: bool | None = None,
) -> Any:
    """TrainingArguments of a recipe's training section; `metrics` (when given) are the eval metrics the
    objective logs, so an early_stopping_metric it never computes fails here instead of mid-run;
    `packing` is the resolved `training.packing` (see `resolve_packing`)."""
    from transformers import TrainingArguments

    packing = bool(cfg.packing) if packing is None else packing
    eval_strategy = cfg.eval_strategy if has_eval else "no"
    track_best = (
        eval_strategy != "no"
        and eval_strategy == cfg.save_strategy
        and (cfg.save_strategy == "epoch" or cfg.save_steps % cfg.eval_steps == 0)
    )
    if cfg.early_stopping_patience and not track_best:
        raise TrainingSetupError(
            "training.early_stopping_patience needs validation data and matching training.eval_strategy / "
            "save_strategy (and save_steps a multiple of eval_steps)"
        )
    metric, greater = best_metric(cfg)
    if track_best and metrics is not None and metric not in set(metrics):
        raise TrainingSetupError(
            f"training.early_stopping_metric={cfg.early_stopping_metric!r}: this objective "
            f"logs only {sorted(metrics)} on validation data — choose one of those"
        )
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps,
        save_strategy=cfg.save_strategy,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        metric_for_best_model=metric if track_best else None,
        greater_is_better=greater if track_best else None,
        load_best_model_at_end=bool(cfg.early_stopping_patience),
        # packed batches hold no padding, so length grouping would only make batches less random
        train_sampling_strategy="group_by_length" if cfg.group_by_length and not packing else "random",
        prediction_loss_only=True,
        activation_checkpointing=cfg.gradient_checkpointing,
        use_cpu=device_type() == "cpu",
        remove_unused_columns=False,
        report_to="none",  # trackers are added as callbacks (tracking_callbacks), with their folders in the run
        dataloader_num_workers=0,
    )


TRACKERS = {"mlflow": "mlflow", "wandb": "wandb"}  # tracker → the package it needs


def tracking_callbacks(run: RunDir, cfg: TrainingConfig) -> list:
    """Callbacks for `training.tracking`: TensorBoard writes logs/tensorboard; MLflow (default store
    logs/mlruns) and Weights & Biases (files under logs/) are opt-in and need their package."""
    missing = [t for t in cfg.tracking if t in TRACKERS and importlib.util.find_spec(TRACKERS[t]) is None]
    if missing:
        raise TrainingSetupError(
            f"training.tracking: {missing} not installed — `pip install "
            f"{' '.join(TRACKERS[t] for t in missing)}`, or remove it from training.tracking"
        )
    cbs: list = []
    for name in dict.fromkeys(cfg.tracking):
        if name == "tensorboard" and is_main_process():  # one event file, written by rank 0
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback

            cbs.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run.logs_dir / "tensorboard"))))
        elif name == "mlflow":
            from transformers.integrations import MLFlowCallback

            # an explicit MLFLOW_TRACKING_URI (a tracking server) wins; else a file store inside the run
            os.environ.setdefault("MLFLOW_TRACKING_URI", (run.logs_dir / "mlruns").resolve().as_uri())
            os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "tuneforge")
            cbs.append(MLFlowCallback())
        elif name == "wandb":
            from transformers.integrations import WandbCallback

            os.environ.setdefault("WANDB_DIR", str(run.logs_dir.resolve()))
            os.environ.setdefault("WANDB_PROJECT", "tuneforge")
            cbs.append(WandbCallback())
    return cbs


@dataclass
class ModelSetup:
    model: Any
    tokenizer: Any
    source: ModelSource
    counts: dict
    bf16: bool
    base_dtype: str
    packing: bool = False  # resolved by the objectives that pack (sft), see resolve_packing


def limit_onednn_cache(capacity: int = 16) -> None:
    """Cap oneDNN's primitive cache (bf16 CPU matmuls) unless the user set it.

    oneDNN keeps one compiled kernel per GEMM shape, up to 1,024 of them; packed rows
    change length every step, so the cache (and RSS) grew by 15-70 MB a step. Measured on
    the demo bench (8 steps, packed): peak RSS 1,557 → 1,473 MB at the same speed with 16
    (0 made steps 2× slower). Padded batches lost 16 % speed with it (248 → 210 tok/s), so it
    is applied to packed training only. oneDNN reads the variable when it first builds a
    kernel, so this must run before the first bf16 matmul of the process.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))


def setup_model(recipe: Recipe) -> ModelSetup:
    """Resolve the base, load its tokenizer and the model with the recipe's strategy applied."""
    from transformers import set_seed

    cfg = recipe.training
    check_training_compat(recipe.strategy, cfg.packing is True)
    set_threads(cfg.threads)
    source = resolve(recipe.model.base, recipe.model.cache_dir)
    tokenizer = load_tokenizer(source.path, recipe.model.trust_remote_code)
    set_seed(cfg.seed)  # adapter initialisation depends on it
    bf16 = use_bf16(cfg.precision)
    model, base_dtype = load_for_training(recipe.model, recipe.strategy, source.path, bf16, cfg.gradient_checkpointing)
    return ModelSetup(model, tokenizer, source, param_counts(model), bf16, base_dtype)


def resolve_packing(packing: bool | None, strategy_kind: str, model: Any) -> bool:
    """`training.packing` as set, or (unset) on wherever per-example attention can keep packed
    examples apart; when on, the model's attention becomes `train/attention.py`'s for training."""
    from ..model.strategies import PROMPT_LEARNING

    if packing is None:
        packing = strategy_kind not in PROMPT_LEARNING and attention.supported(model)
    if packing and attention.supported(model):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.set_attn_implementation(attention.register())
    return packing


def fit(
    run: RunDir,
    setup: ModelSetup,
    train_ds: Any,
    eval_ds: Any,
    collator: Any,
    *,
    resume: bool = False,
    callbacks: list | None = None,
    logits_at_labels_only: bool = False,
    metrics: Iterable[str] = ("eval_loss",),
    before_train: Any = None,
) -> tuple[Any, dict]:
    """Train with TuneforgeTrainer, save the result (adapter/ or model/) atomically; (trainer, info).

    `before_train(trainer)` runs once the trainer exists (e.g. to measure the starting perplexity).
    The caller records `info` with `run.stage_finished("train", **info)`.
    """
    from transformers import EarlyStoppingCallback

    recipe = run.recipe()
    cfg = recipe.training
    checkpoint = checkpoint_to_resume(run.checkpoints_dir, resume)
    args = training_arguments(cfg, run.checkpoints_dir, eval_ds is not None, metrics, setup.packing)
    resume_step = int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else 0
    cbs = [MetricsJsonlCallback(run.metrics_file, resume_step)] + tracking_callbacks(run, cfg)
    if cfg.early_stopping_patience:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = TuneforgeTrainer(
        model=setup.model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        callbacks=cbs + list(callbacks or []),
        autocast_bf16=setup.bf16,
        logits_at_labels_only=logits_at_labels_only,
        fused_ops=cfg.fused_ops,
    )
    run.stage_started("train")
    record_lineage(run, setup.source)
    t0 = time.time()
    try:
        if before_train is not None:
            before_train(trainer)
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except BaseException as exc:
        run.stage_finished("train", "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    elapsed = time.time() - t0
    kind = recipe.strategy.kind
    out_dir = run.adapter_dir if is_adapter(kind) else run.model_dir
    save_trained(trainer, setup.tokenizer, out_dir)  # every rank: ZeRO-3/FSDP gather shards; rank 0 writes
    stale = run.model_dir if out_dir == run.adapter_dir else run.adapter_dir
    shutil.rmtree(stale, ignore_errors=True)  # a re-run with another strategy must not leave the old result

    tokens = sum_over_processes(trainer, trainer.tokens_this_session())
    info = {
        "strategy": kind,
        "params": setup.counts,
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0, 3),
        "train_loss": round(result.training_loss, 5),
        "first_loss": next((h["loss"] for h in trainer.state.log_history if "loss" in h), None),
        "last_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
        "best_eval_loss": min((h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h), default=None),
        "best_metric": {args.metric_for_best_model: trainer.state.best_metric} if args.metric_for_best_model else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "seconds": round(elapsed, 1),
        "steps_this_session": trainer.state.global_step - resume_step,
        "tokens_seen": tokens,
        "tokens_per_second": round(tokens / elapsed, 1) if elapsed > 0 else None,
        "bf16_autocast": setup.bf16,
        "base_weights_dtype": setup.base_dtype,
        "packing": setup.packing,
        "fused_ops": trainer.fused_count,
        "logits_at_labels_only": logits_at_labels_only,
        "tracking": list(cfg.tracking),
        "resumed_from": checkpoint,
        "distributed": process_info(trainer),
        "output": str(out_dir.relative_to(run.path)),
    }
    return trainer, info


def train(run: RunDir, resume: bool = False, callbacks: list | None = None) -> dict:
    """Train the run's model on its prepared data; write the result to adapter/ (or model/)."""
    recipe = run.require().recipe()
    cfg = recipe.training
    if not run.split_file("train").is_file():
        raise FileNotFoundError(f"{run.path}: no prepared data — run `tuneforge prepare` first")
    setup = setup_model(recipe)
    setup.packing = resolve_packing(cfg.packing, recipe.strategy.kind, setup.model)
    if setup.packing:
        limit_onednn_cache()
    train_ds = tokenised_split(run.split_file("train"), setup.tokenizer, recipe.data.train_on)
    eval_ds = tokenised_split(run.split_file("validation"), setup.tokenizer, recipe.data.train_on)
    collator = PackedCollator() if setup.packing else PadCollator(setup.tokenizer.pad_token_id)
    _, info = fit(
        run,
        setup,
        train_ds,
        eval_ds,
        collator,
        resume=resume,
        callbacks=callbacks,
        logits_at_labels_only=cfg.logits_at_labels_only,
    )
    run.stage_finished("train", **info)
    return info
