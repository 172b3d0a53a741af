"""Training time on this machine, estimated before training from a short measured step.

The model is loaded and prepared exactly as `train/sft.py` prepares it (strategy applied,
frozen base weights in bf16 when training autocasts to bf16), one real batch of the data
is run through a few forward + backward + optimiser steps with the trainer's own loss
(`label_positions_loss`) and collator, and the measured tokens/s gives:

    minutes = tokens per epoch × epochs / tokens per second / 60

Tokens are real (non-padding) tokens, counted the way the trainer counts them for its
tokens/s, so the estimate and the training log speak of the same thing. The measured
batch is taken around the median example length, which is what the trainer's
length-grouped batches look like; the first step is a warm-up (allocations, lazy init)
and is not timed.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

DEFAULT_MODEL = "smollm2-135m-instruct"


def median_batch(examples: list[dict], batch_size: int) -> list[dict]:
    """`batch_size` examples around the median length (all of them when there are fewer).

    >>> [len(e["input_ids"]) for e in median_batch([{"input_ids": [0] * n} for n in (9, 1, 5, 3, 7)], 2)]
    [5, 7]
    """
    order = sorted(examples, key=lambda e: len(e["input_ids"]))
    start = max(0, min(len(order) // 2, len(order) - batch_size))
    return order[start : start + batch_size]


def estimate_minutes(tokens_per_epoch: int, epochs: float, tokens_per_second: float) -> float:
    """Minutes to train `epochs` passes over `tokens_per_epoch` tokens at the measured speed.

    >>> estimate_minutes(12_000, 3, 100.0)
    6.0
    """
    return tokens_per_epoch * epochs / tokens_per_second / 60 if tokens_per_second > 0 else float("inf")


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)  # CUDA kernels run asynchronously: time the work, not the launch


def measure_step(model: Any, batch: dict, bf16: bool, steps: int = 2, warmup: int = 1) -> dict:
    """Time `steps` training steps (forward, backward, AdamW) on one collated batch."""
    import torch

    from ..lm.loss import label_positions_loss

    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items()}
    labels = inputs.pop("labels")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters — check strategy.kind / strategy.target_modules")
    opt = torch.optim.AdamW(params, lr=1e-6)  # its update is part of a step's cost (large for full fine-tuning)
    model.train()

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss_sum, n, _ = label_positions_loss(model, inputs, labels)
        (loss_sum / max(n, 1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    elapsed = max(time.perf_counter() - t0, 1e-9)
    tokens = int(inputs["attention_mask"].sum())
    return {
        "tokens_per_step": tokens,
        "seconds_per_step": round(elapsed / steps, 4),
        "tokens_per_second": round(tokens * steps / elapsed, 1),
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
) -> dict:
    """Estimated training time of `rows` (normalised) on this machine, measured on `model_ref`.

    `strategy` (a StrategyConfig) defaults to the recipe default (LoRA); `epochs` defaults to
    the suggested epoch count. Rows over `max_length` are left out, as prepare drops them.
    """
    from ..data.card import suggested_epochs
    from ..lm.collator import PadCollator
    from ..lm.load import load_model, load_tokenizer
    from ..lm.template import tokenize_messages
    from ..model.device import device_type, use_bf16
    from ..model.sources import resolve
    from ..model.strategies import apply_strategy
    from ..recipe import StrategyConfig, TrainingConfig

    strategy = strategy or StrategyConfig()
    batch_size = batch_size or TrainingConfig().batch_size
    source = resolve(model_ref, cache_dir)
    tok = tokenizer or load_tokenizer(source.path)
    examples = []
    for r in rows:
        if not any(m["role"] == "assistant" for m in r["messages"]):
            continue  # question-only rows are never trained on
        enc = tokenize_messages(tok, r["messages"], train_on)
        if len(enc["input_ids"]) <= max_length and any(x != -100 for x in enc["labels"]):
            examples.append(enc)
    if not examples:
        raise ValueError(f"no row fits max_length={max_length} with a token to learn — nothing to time")
    tokens_per_epoch = sum(len(e["input_ids"]) for e in examples)
    epochs = epochs if epochs is not None else suggested_epochs(len(examples))
    bf16 = use_bf16(precision)
    # as train/sft.py: frozen weights stored in bf16 under bf16 autocast (no per-step casts)
    weights = "bfloat16" if bf16 and strategy.kind != "full" else dtype
    model = apply_strategy(load_model(source.path, weights), strategy).to(device_type())
    try:
        batch = PadCollator(tok.pad_token_id)(median_batch(examples, batch_size))
        speed = measure_step(model, batch, bf16, steps=steps)
    finally:
        del model
        gc.collect()
    if max_steps > 0:  # the run stops after max_steps optimiser steps, whatever the epochs
        tokens, passes = speed["tokens_per_step"] * gradient_accumulation * max_steps, 1
        basis = f"{max_steps} step(s) × {gradient_accumulation} batch(es) of ~{speed['tokens_per_step']} tokens"
    else:
        tokens, passes = tokens_per_epoch, epochs
        basis = f"{tokens_per_epoch:,} tokens per epoch × {epochs:g} epoch(s)"
    seconds = 60 * estimate_minutes(tokens, passes, speed["tokens_per_second"])
    return {
        "model": model_ref,
        "device": device_type(),
        "bf16_autocast": bf16,
        "base_weights_dtype": weights,
        "strategy": strategy.kind if strategy.kind == "full" else f"{strategy.kind} r={strategy.r}",
        "batch_size": batch["input_ids"].shape[0],
        "measured_steps": steps,
        **speed,
        "examples": len(examples),
        "tokens_per_epoch": tokens_per_epoch,
        "epochs": epochs,
        "basis": basis,
        "seconds": round(seconds, 3),
        "minutes": round(seconds / 60, 4),
    }


def recipe_time_estimate(recipe: Any, tokenizer: Any) -> Callable[[list[dict]], dict]:
    """rows → the training time of this recipe (model, strategy, precision, batch, epochs), from
    2 measured steps: what `prepare` puts in the data card when `data.estimate_time` is on."""
    t, d = recipe.training, recipe.data

    def estimate(rows: list[dict]) -> dict:
        return estimate_time(
            rows,
            recipe.model.base,
            strategy=recipe.strategy,
            precision=t.precision,
            batch_size=t.batch_size,
            max_length=d.max_length,
            train_on=d.train_on,
            epochs=t.epochs,
            max_steps=t.max_steps,
            gradient_accumulation=t.gradient_accumulation,
            dtype=recipe.model.dtype,
            cache_dir=recipe.model.cache_dir,
            tokenizer=tokenizer,
        )

    return estimate
