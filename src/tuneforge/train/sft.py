"""Supervised fine-tuning (instruction tuning) on chat data: the stage-4 entry point."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ..data.template import tokenize_messages
from ..io import read_jsonl, replace_dir, staging_dir
from ..model.device import device_type, use_bf16
from ..model.load import load_model, load_tokenizer, set_threads
from ..model.sources import resolve
from ..model.strategies import apply_strategy, param_counts
from ..recipe import TrainingConfig
from ..run import RunDir
from .callbacks import MetricsJsonlCallback
from .collator import PackedCollator, PadCollator
from .trainer import TuneforgeTrainer, last_checkpoint


class ResumeError(RuntimeError):
    pass


def tokenised_split(path: Path, tokenizer: Any, train_on: str) -> Any:
    """A `datasets.Dataset` of input_ids/labels for one prepared split (None when empty)."""
    from datasets import Dataset

    rows = [r for r in read_jsonl(path) if any(m["role"] == "assistant" for m in r["messages"])]
    if not rows:
        return None
    enc = [tokenize_messages(tokenizer, r["messages"], train_on) for r in rows]
    return Dataset.from_list([{**e, "length": len(e["input_ids"])} for e in enc])


def training_arguments(cfg: TrainingConfig, output_dir: Path, has_eval: bool) -> Any:
    from transformers import TrainingArguments

    eval_strategy = cfg.eval_strategy if has_eval else "no"
    track_best = eval_strategy != "no" and eval_strategy == cfg.save_strategy and (
        cfg.save_strategy == "epoch" or cfg.save_steps % cfg.eval_steps == 0)
    if cfg.early_stopping_patience and not track_best:
        raise ValueError(
            "training.early_stopping_patience needs validation data and matching training.eval_strategy / "
            "save_strategy (and save_steps a multiple of eval_steps)"
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
        metric_for_best_model="eval_loss" if track_best else None,
        greater_is_better=False if track_best else None,
        load_best_model_at_end=bool(cfg.early_stopping_patience),
        # packed batches hold no padding, so length grouping would only make batches less random
        train_sampling_strategy="group_by_length" if cfg.group_by_length and not cfg.packing else "random",
        prediction_loss_only=True,
        activation_checkpointing=cfg.gradient_checkpointing,
        use_cpu=device_type() == "cpu",
        remove_unused_columns=False,
        report_to="none",
        dataloader_num_workers=0,
    )


def train(run: RunDir, resume: bool = False, callbacks: list | None = None) -> dict:
    """Train the run's model on its prepared data; write the result to adapter/ (or model/)."""
    from transformers import EarlyStoppingCallback, set_seed
    from transformers.integrations import TensorBoardCallback

    recipe = run.require().recipe()
    cfg = recipe.training
    if not run.split_file("train").is_file():
        raise FileNotFoundError(f"{run.path}: no prepared data — run `tuneforge prepare` first")
    set_threads(cfg.threads)
    source = resolve(recipe.model.base, recipe.model.cache_dir)
    tokenizer = load_tokenizer(source.path, recipe.model.trust_remote_code)
    set_seed(cfg.seed)  # adapter initialisation depends on it
    bf16 = use_bf16(cfg.precision)
    # Frozen base weights are stored in bf16 when training in bf16: autocast then has no
    # per-step weight casts to do (PEFT keeps the adapter weights in fp32).
    dtype = "bfloat16" if bf16 and recipe.strategy.kind != "full" else recipe.model.dtype
    model = apply_strategy(load_model(source.path, dtype, recipe.model.trust_remote_code), recipe.strategy)
    counts = param_counts(model)
    train_ds = tokenised_split(run.split_file("train"), tokenizer, recipe.data.train_on)
    eval_ds = tokenised_split(run.split_file("validation"), tokenizer, recipe.data.train_on)

    checkpoint = None
    if resume:
        checkpoint = last_checkpoint(str(run.checkpoints_dir))
        if checkpoint is None:
            raise ResumeError(f"{run.checkpoints_dir}: no complete checkpoint to resume from — train without --resume")
    else:
        shutil.rmtree(run.checkpoints_dir, ignore_errors=True)

    args = training_arguments(cfg, run.checkpoints_dir, eval_ds is not None)
    from torch.utils.tensorboard import SummaryWriter

    resume_step = int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else 0
    cbs = [MetricsJsonlCallback(run.metrics_file, resume_step),
           TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run.logs_dir / "tensorboard")))]
    if cfg.early_stopping_patience:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    collator = PackedCollator() if cfg.packing else PadCollator(tokenizer.pad_token_id)
    trainer = TuneforgeTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=collator, callbacks=cbs + list(callbacks or []),
        autocast_bf16=bf16, logits_at_labels_only=cfg.logits_at_labels_only,
    )
    run.stage_started("train")
    run.update_manifest(base_model=source.to_dict())
    t0 = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except BaseException as exc:
        run.stage_finished("train", "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    elapsed = time.time() - t0
    out_dir = run.adapter_dir if recipe.strategy.kind != "full" else run.model_dir
    tmp = staging_dir(out_dir)
    trainer.model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, out_dir)

    epochs_done = trainer.state.epoch or 0
    steps_done = trainer.state.global_step - resume_step
    tokens = trainer.tokens_this_session()
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    info = {
        "params": counts,
        "steps": trainer.state.global_step,
        "epochs": round(epochs_done, 3),
        "train_loss": round(result.training_loss, 5),
        "first_loss": next((h["loss"] for h in trainer.state.log_history if "loss" in h), None),
        "best_eval_loss": min(evals) if evals else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "seconds": round(elapsed, 1),
        "steps_this_session": steps_done,
        "tokens_seen": tokens,
        "tokens_per_second": round(tokens / elapsed, 1) if elapsed > 0 else None,
        "bf16_autocast": bf16,
        "base_weights_dtype": dtype,
        "packing": cfg.packing,
        "logits_at_labels_only": cfg.logits_at_labels_only,
        "resumed_from": checkpoint,
        "output": str(out_dir.relative_to(run.path)),
    }
    run.stage_finished("train", **info)
    return info
