"""Stage 3, set up training: what every objective (and the time estimate) builds the same way.

- `training_source`: the base model the run's manifest recorded at prepare time (no second
  resolve, no second hash of the weights); resolved and recorded here only when it is missing.
- `setup_model(model_cfg, strategy_cfg, training_cfg, source)`: thread settings, tokenizer,
  seed, the bf16 decision and the model with its strategy (`model.load.load_for_training`,
  which also stores frozen base weights in bf16 or 4-bit NF4 for QLoRA); with `packable`
  the packing decision too (`resolve_packing`), and `collator` gives the matching collator.
- `training_arguments`, `tracking_callbacks`, `standard_callbacks`: the HF TrainingArguments
  and callbacks of a recipe's `training` section, the same for every objective.

`train/fit.py` then runs the trainer and saves the result; `train/estimate.py` times a few
steps of exactly this setup.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..dist import is_main_process
from ..errors import TuneforgeError
from ..lm.collator import PackedCollator, PadCollator
from ..lm.load import base_of, load_tokenizer, set_threads
from ..model.device import device_type, use_bf16
from ..model.load import load_for_training
from ..model.source import ModelSource, ModelSourceError, record_lineage, run_source
from ..model.sources import resolve
from ..model.strategies import param_counts
from ..recipe import Recipe, TrainingConfig
from ..run import RunDir
from . import attention
from .callbacks import MetricsJsonlCallback


class TrainingSetupError(TuneforgeError, ValueError):
    """training.* options that cannot work together (or a tracker that is not installed)."""


# --------------------------------------------------------------------------- run and source


def prepared_recipe(run: RunDir) -> Recipe:
    """The run's recipe, once its data are prepared (training reads data/train.jsonl)."""
    recipe = run.require().recipe()
    if not run.split_file("train").is_file():
        raise FileNotFoundError(f"{run.path}: no prepared data — run `tuneforge prepare` first")
    return recipe


def training_source(run: RunDir, model_cfg: Any) -> ModelSource:
    """The base model to train: the one `prepare` recorded in the manifest when it is there.

    Resolving again would hash the weights a second time (seconds to minutes for a real
    model). A run made without `prepare` (or whose recorded folder is gone, e.g. a cleared
    conversion cache) is resolved here, and the lineage recorded then.
    """
    recorded = run.manifest().get("base_model") or {}
    if recorded.get("id") == model_cfg.base:  # a recipe edited since prepare names another base
        try:
            return run_source(run)
        except ModelSourceError:
            pass
    source = resolve(model_cfg.base, model_cfg.cache_dir)
    record_lineage(run, source)
    return source


# --------------------------------------------------------------------------- model


@dataclass
class ModelSetup:
    model: Any
    tokenizer: Any
    source: ModelSource
    counts: dict
    bf16: bool
    base_dtype: str
    packing: bool = False  # resolved for the objectives that pack (sft), see resolve_packing
    strategy: str = ""  # strategy.kind

    def info(self) -> dict:
        """What every objective records about its setup in the manifest's train stage."""
        return {
            "strategy": self.strategy,
            "params": self.counts,
            "bf16_autocast": self.bf16,
            "base_weights_dtype": self.base_dtype,
        }


def is_peft(model: Any) -> bool:
    """A PEFT model (an adapter on a frozen base), whose result is the adapter alone.

    >>> is_peft(object())
    False
    """
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


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


def resolve_packing(packing: bool | None, strategy_kind: str, model: Any) -> bool:
    """`training.packing` as set, or (unset) on wherever per-example attention can keep packed
    examples apart; when on, the model's attention becomes `train/attention.py`'s for training."""
    from ..model.strategies import PROMPT_LEARNING

    if packing is None:
        packing = strategy_kind not in PROMPT_LEARNING and attention.supported(model)
    if packing and attention.supported(model):
        base_of(model).set_attn_implementation(attention.register())
    return packing


# (model path, tokenizer, bf16) -> (model with its strategy applied, how the base weights are stored)
ModelLoader = Callable[[str, Any, bool], tuple[Any, str]]


def setup_model(
    model_cfg: Any,
    strategy_cfg: Any,
    training_cfg: TrainingConfig,
    source: ModelSource,
    *,
    packable: bool = False,
    load: ModelLoader | None = None,
) -> ModelSetup:
    """Tokenizer and model of `source` with the strategy applied, seeded, with the bf16 decision.

    `packable`: the objective's examples may be packed (sft), so `training.packing` is
    resolved once the model is loaded. `load` replaces the causal-LM loader for objectives
    with another model class (reward: a sequence classifier).
    """
    from transformers import set_seed

    # packing=true with virtual tokens was refused when the recipe loaded (Recipe.check)
    set_threads(training_cfg.threads)
    tokenizer = load_tokenizer(source.path, model_cfg.trust_remote_code)
    set_seed(training_cfg.seed)  # adapter (and head) initialisation depends on it
    bf16 = use_bf16(training_cfg.precision)
    if load is None:
        model, base_dtype = load_for_training(
            model_cfg, strategy_cfg, source.path, bf16, training_cfg.gradient_checkpointing
        )
    else:
        model, base_dtype = load(source.path, tokenizer, bf16)
    setup = ModelSetup(model, tokenizer, source, param_counts(model), bf16, base_dtype, strategy=strategy_cfg.kind)
    if packable:
        setup.packing = resolve_packing(training_cfg.packing, strategy_cfg.kind, model)
        if setup.packing:
            limit_onednn_cache()
    return setup


def collator(setup: ModelSetup) -> Any:
    """The batch collator that matches the packing decision: one padding-free row, or padded rows.
    The batch's shared prefix is kept once only where `train/attention.py` attends (it alone
    reads the prefix back from the positions; transformers' own packed path would not)."""
    if not setup.packing:
        return PadCollator(setup.tokenizer.pad_token_id)
    attn = getattr(base_of(setup.model).config, "_attn_implementation", None)
    return PackedCollator(share_prefix=attn == attention.NAME)


# --------------------------------------------------------------------------- arguments and callbacks


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
    **overrides: Any,
) -> Any:
    """TrainingArguments of a recipe's training section; `metrics` (when given) are the eval metrics the
    objective logs, so an early_stopping_metric it never computes fails here instead of mid-run;
    `packing` is the resolved `training.packing` (see `resolve_packing`); `overrides` are
    TrainingArguments fields set on top (the time estimate turns checkpoints off)."""
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
    kwargs = dict(
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
    return TrainingArguments(**{**kwargs, **overrides})


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


def resume_step(checkpoint: str | None) -> int:
    """The global step a checkpoint was written at (0 without one).

    >>> resume_step("runs/x/checkpoints/checkpoint-12"), resume_step(None)
    (12, 0)
    """
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else 0


def standard_callbacks(run: RunDir, cfg: TrainingConfig, checkpoint: str | None) -> list:
    """metrics.jsonl, the recipe's trackers, early stopping: the set every HF-Trainer objective uses."""
    from transformers import EarlyStoppingCallback

    cbs: list = [MetricsJsonlCallback(run.metrics_file, resume_step(checkpoint))] + tracking_callbacks(run, cfg)
    if cfg.early_stopping_patience:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    return cbs
