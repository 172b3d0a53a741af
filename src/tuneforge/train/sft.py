"""Supervised fine-tuning (instruction tuning) on chat data: the stage-4 entry point.

Setup (source, tokenizer, model with its strategy, packing) is `train/setup.py`'s and the
trainer loop and save are `train/fit.py`'s, shared with every other objective; what is
SFT's own is the data: prepared chat rows tokenised with loss on the assistant turns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import read_jsonl
from ..lm.template import tokenize_messages
from ..run import RunDir
from .fit import fit
from .setup import collator, prepared_recipe, setup_model, training_source
from .trainer import ResumeError  # noqa: F401 (public here: the error of `train(run, resume=True)`)


def is_trainable(row: dict) -> bool:
    """A prepared chat row with an answer to learn (question-only rows are never trained on).

    >>> is_trainable({"messages": [{"role": "user", "content": "hi"}]})
    False
    """
    return any(m["role"] == "assistant" for m in row["messages"])


def tokenised_split(path: Path, tokenizer: Any, train_on: str) -> Any:
    """A `datasets.Dataset` of input_ids/labels for one prepared split (None when empty)."""
    from datasets import Dataset

    rows = [r for r in read_jsonl(path) if is_trainable(r)]
    if not rows:
        return None
    enc = [tokenize_messages(tokenizer, r["messages"], train_on) for r in rows]
    return Dataset.from_list([{**e, "length": len(e["input_ids"])} for e in enc])


def train(run: RunDir, resume: bool = False, callbacks: list | None = None) -> dict:
    """Train the run's model on its prepared data; write the result to adapter/ (or model/)."""
    recipe = prepared_recipe(run)
    cfg = recipe.training
    source = training_source(run, recipe.model)
    setup = setup_model(recipe.model, recipe.strategy, cfg, source, packable=True)
    train_ds = tokenised_split(run.split_file("train"), setup.tokenizer, recipe.data.train_on)
    eval_ds = tokenised_split(run.split_file("validation"), setup.tokenizer, recipe.data.train_on)
    _, info = fit(
        run,
        setup,
        cfg,
        train_ds,
        eval_ds,
        collator(setup),
        resume=resume,
        callbacks=callbacks,
        logits_at_labels_only=cfg.logits_at_labels_only,
    )
    run.stage_finished("train", **info)
    return info
