"""Training time on this machine, estimated before training from a few measured steps.

The estimate is a short run of training itself, not a model of it: the model is set up by
`train/setup.py` exactly as `tuneforge train` sets it up (same strategy, the same bf16
decision and frozen-weight dtype, the 4-bit base for QLoRA, the same packing decision and
collator), and a few optimiser steps of the trainer training uses (`fit.lm_trainer`:
autocast, fused ops, label-only logits, gradient clipping) are timed with `StepTimer`. The
measured tokens/s then gives:

    minutes = tokens per epoch × epochs / tokens per second / 60

Tokens are real (non-padding) tokens, counted the way the trainer counts them for its
tokens/s, so the estimate and the training log speak of the same thing. The timed steps
are the first steps of training itself (same seeded sampler, so the same batches); the
first one is a warm-up (allocations, optimiser state, kernel selection) and is not timed;
the speed is the median of the timed steps' tokens/s.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "smollm2-135m-instruct"
LORA_FAMILY = ("lora", "dora", "qlora")  # the kinds that have a rank


def estimate_minutes(tokens_per_epoch: int, epochs: float, tokens_per_second: float) -> float:
    """Minutes to train `epochs` passes over `tokens_per_epoch` tokens at the measured speed.

    >>> estimate_minutes(12_000, 3, 100.0)
    6.0
    """
    return tokens_per_epoch * epochs / tokens_per_second / 60 if tokens_per_second > 0 else float("inf")


def strategy_label(strategy_cfg: Any) -> str:
    """The strategy as the estimate names it (the rank only for the kinds that have one)."""
    kind = strategy_cfg.kind
    return f"{kind} r={strategy_cfg.r}" if kind in LORA_FAMILY else kind


def time_steps(setup: Any, training_cfg: Any, examples: list[dict], steps: int = 2, warmup: int = 1) -> dict:
    """Run the first `warmup + steps` optimiser steps of training on `examples` and time the last `steps`.

    The batches are training's own: the same sampler (length-grouped or random, seeded),
    collator and batch size, one batch per step as `training.gradient_accumulation=1` trains.
    Their shapes change from step to step as in training, which matters: a kernel cache that
    only ever sees one shape (e.g. oneDNN's for bf16 matmuls) makes repeated batches faster
    than training (measured on the tiny QLoRA model: one batch repeated was timed 20-30 %
    faster than training's steps).
    """
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from .callbacks import StepTimer
    from .fit import lm_trainer
    from .setup import collator, training_arguments

    total = warmup + steps
    # training's own loop, minus what is not a training step: no checkpoints, no validation, no trackers
    update = {"gradient_accumulation": 1, "max_steps": total, "early_stopping_patience": None, "tracking": []}
    cfg = training_cfg.model_copy(update={**update, "batch_size": min(training_cfg.batch_size, len(examples))})
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="tuneforge-estimate-") as out:
        args = training_arguments(cfg, Path(out), has_eval=False, packing=setup.packing, save_strategy="no")
        data = Dataset.from_list(
            [{"input_ids": e["input_ids"], "labels": e["labels"], "length": len(e["input_ids"])} for e in examples]
        )
        trainer = lm_trainer(setup, args, data, None, collator(setup), cfg, [timer], cfg.logits_at_labels_only)
        for cb in (ProgressCallback, PrinterCallback):  # an estimate prints no progress bar or log lines
            trainer.remove_callback(cb)
        try:
            trainer.train()
        finally:
            del trainer
            gc.collect()
    seconds, tokens = timer.seconds[warmup:], timer.tokens[warmup:]
    if len(seconds) < steps:
        raise RuntimeError(f"the timed training stopped after {len(timer.seconds)} of {total} steps")
    # the median step speed: one step slowed by another process on a shared machine does not count
    speed = statistics.median(n / max(t, 1e-9) for n, t in zip(tokens, seconds))
    per_step = round(sum(tokens) / len(tokens))
    return {
        "batch_size": cfg.batch_size,
        "tokens_per_step": per_step,
        "seconds_per_step": round(per_step / speed, 4),
        "tokens_per_second": round(speed, 1),
        "step_seconds": [round(t, 4) for t in seconds],
    }


def estimate_training_time(
    rows: list[dict],
    model_cfg: Any,
    strategy_cfg: Any,
    training_cfg: Any,
    *,
    max_length: int = 512,
    train_on: str = "assistant",
    epochs: float | None = None,
    source: Any = None,
    tokenizer: Any = None,
    steps: int = 2,
) -> dict:
    """Estimated training time of `rows` (normalised) with these recipe sections, on this machine.

    `source` is the resolved `model_cfg.base` when the caller has it (resolving again hashes the
    weights); `epochs` defaults to the suggested epoch count. Rows over `max_length` are left
    out, as prepare drops them.
    """
    from ..data.card import suggested_epochs
    from ..lm.load import load_tokenizer
    from ..lm.template import tokenize_messages
    from ..model.device import device_type
    from ..model.sources import resolve
    from .setup import setup_model
    from .sft import is_trainable

    source = source or resolve(model_cfg.base, model_cfg.cache_dir)
    tok = tokenizer or load_tokenizer(source.path, model_cfg.trust_remote_code)
    examples = []
    for r in rows:
        if not is_trainable(r):
            continue
        enc = tokenize_messages(tok, r["messages"], train_on)
        if len(enc["input_ids"]) <= max_length and any(x != -100 for x in enc["labels"]):
            examples.append(enc)
    if not examples:
        raise ValueError(f"no row fits max_length={max_length} with a token to learn — nothing to time")
    tokens_per_epoch = sum(len(e["input_ids"]) for e in examples)
    epochs = epochs if epochs is not None else suggested_epochs(len(examples))

    setup = setup_model(model_cfg, strategy_cfg, training_cfg, source, packable=True)
    how = {"bf16_autocast": setup.bf16, "base_weights_dtype": setup.base_dtype, "packing": setup.packing}
    try:
        speed = time_steps(setup, training_cfg, examples, steps=steps)
    finally:
        del setup  # the model is the caller's memory until training loads its own
        gc.collect()
    ga, max_steps = training_cfg.gradient_accumulation, training_cfg.max_steps
    if max_steps > 0:  # the run stops after max_steps optimiser steps, whatever the epochs
        tokens, passes = speed["tokens_per_step"] * ga * max_steps, 1
        basis = f"{max_steps} step(s) × {ga} batch(es) of ~{speed['tokens_per_step']} tokens"
    else:
        tokens, passes = tokens_per_epoch, epochs
        basis = f"{tokens_per_epoch:,} tokens per epoch × {epochs:g} epoch(s)"
    seconds = 60 * estimate_minutes(tokens, passes, speed["tokens_per_second"])
    return {
        "model": model_cfg.base,
        "device": device_type(),
        **how,
        "strategy": strategy_label(strategy_cfg),
        "measured_steps": steps,
        **speed,
        "examples": len(examples),
        "tokens_per_epoch": tokens_per_epoch,
        "epochs": epochs,
        "basis": basis,
        "seconds": round(seconds, 3),
        "minutes": round(seconds / 60, 4),
    }


def estimate_time(
    rows: list[dict],
    model_ref: str = DEFAULT_MODEL,
    *,
    strategy: Any = None,
    precision: str = "auto",
    batch_size: int | None = None,
    max_length: int = 512,
    train_on: str = "assistant",
    epochs: float | None = None,
    max_steps: int = -1,
    gradient_accumulation: int = 1,
    dtype: str = "float32",
    cache_dir: str | None = None,
    tokenizer: Any = None,
    steps: int = 2,
    source: Any = None,
) -> dict:
    """Estimated training time of `rows` (normalised) on this machine, measured on `model_ref`.

    `strategy` (a strategy section) defaults to the recipe default (LoRA); every other
    training option is the recipe default (packing where it works, for one); `epochs`
    defaults to the suggested epoch count. See `estimate_training_time`.
    """
    from ..recipe import ModelConfig, Recipe, TrainingConfig

    default = Recipe()
    training = {"precision": precision, "max_steps": max_steps, "gradient_accumulation": gradient_accumulation}
    if batch_size:
        training["batch_size"] = batch_size
    return estimate_training_time(
        rows,
        ModelConfig(base=model_ref, dtype=dtype, cache_dir=cache_dir),
        strategy or default.strategy,
        TrainingConfig(**training),
        max_length=max_length,
        train_on=train_on,
        epochs=epochs,
        source=source,
        tokenizer=tokenizer,
        steps=steps,
    )


def recipe_time_estimate(
    recipe: Any, tokenizer: Any, source: Any = None, steps: int = 2
) -> Callable[[list[dict]], dict]:
    """rows → the training time of this recipe (model, strategy, every training option), from `steps`
    measured steps: what `prepare` puts in the data card when `data.estimate_time` is on.
    `source`: the resolved base when the caller has it (prepare does)."""

    def estimate(rows: list[dict]) -> dict:
        return estimate_training_time(
            rows,
            recipe.model,
            recipe.strategy,
            recipe.training,
            max_length=recipe.data.max_length,
            train_on=recipe.data.train_on,
            epochs=recipe.training.epochs,
            source=source,
            tokenizer=tokenizer,
            steps=steps,
        )

    return estimate
