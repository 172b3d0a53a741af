"""Continued pretraining on raw domain text: documents concatenated (each ended by EOS)
and cut into `objective.block_size` blocks (packing), loss on every token.

The data are prepared `text` rows (e.g. examples/demo/handbook.jsonl); a prepared row
whose only message is the assistant's is raw text, any other row is rendered through
the chat template and trained on as a whole. Perplexity on the validation blocks is
measured before and after training (before: the base, with any adapter switched off).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..errors import TuneforgeError
from ..io import read_jsonl
from ..lm.collator import PadCollator
from ..lm.template import render
from ..run import RunDir
from .fit import fit
from .setup import prepared_recipe, setup_model, training_source


class PretrainDataError(TuneforgeError, ValueError):
    pass


def row_text(row: dict, tokenizer: Any) -> str:
    """The raw text of a prepared row.

    >>> row_text({"messages": [{"role": "assistant", "content": "Raw text."}]}, None)
    'Raw text.'
    """
    msgs = row["messages"]
    if len(msgs) == 1 and msgs[0]["role"] == "assistant":
        return msgs[0]["content"]
    return render(tokenizer, msgs)


def pack_blocks(docs: Iterable[list[int]], eos_id: int, block_size: int) -> list[list[int]]:
    """Concatenate token lists, each followed by `eos_id`, and cut into `block_size` blocks.

    The tail shorter than a block is kept as a last, shorter block (padded in its batch),
    so no text is thrown away.

    >>> pack_blocks([[1, 2, 3], [4, 5]], 0, 4)
    [[1, 2, 3, 0], [4, 5, 0]]
    """
    stream: list[int] = []
    for ids in docs:
        stream += list(ids) + [eos_id]
    return [stream[i : i + block_size] for i in range(0, len(stream), block_size)]


def block_dataset(path: Any, tokenizer: Any, block_size: int) -> Any:
    """A `datasets.Dataset` of packed blocks (labels = input_ids) for one prepared split, or None."""
    from datasets import Dataset

    if not path.is_file():
        return None
    texts = [row_text(r, tokenizer) for r in read_jsonl(path)]
    texts = [t for t in texts if t.strip()]
    if not texts:
        return None
    if tokenizer.eos_token_id is None:
        raise PretrainDataError("objective.kind=pretrain: the tokenizer has no EOS token to separate documents")
    # the tokenizer's own special tokens (e.g. BOS) start each document, as in the model's pretraining
    docs = tokenizer(texts, add_special_tokens=True)["input_ids"]
    blocks = pack_blocks(docs, tokenizer.eos_token_id, block_size)
    return Dataset.from_list([{"input_ids": b, "labels": list(b), "length": len(b)} for b in blocks])


def block_perplexity(trainer: Any, dataset: Any, adapter_off: bool = False) -> float | None:
    """exp(mean next-token loss) over `dataset`'s blocks, token-weighted, with the trainer's precision."""
    import contextlib

    import torch

    if dataset is None:
        return None
    model = trainer.model
    off = model.disable_adapter() if adapter_off and hasattr(model, "disable_adapter") else contextlib.nullcontext()
    collate = trainer.data_collator
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with off, torch.no_grad(), trainer.autocast_smart_context_manager():
            for i in range(0, len(dataset), trainer.args.per_device_eval_batch_size):
                batch = collate(
                    [dataset[j] for j in range(i, min(i + trainer.args.per_device_eval_batch_size, len(dataset)))]
                )
                batch = {k: v.to(trainer.args.device) for k, v in batch.items()}
                n = int((batch["labels"][:, 1:] != -100).sum())
                total += model(**batch, use_cache=False).loss.float().item() * n
                count += n
    finally:
        model.train(was_training)
    return round(math.exp(min(total / max(count, 1), 50)), 4)


def train(run: RunDir, resume: bool = False, callbacks: list | None = None) -> dict:
    """Continued pretraining of the run's model on its prepared text; see the module docstring."""
    recipe = prepared_recipe(run)
    setup = setup_model(recipe.model, recipe.strategy, recipe.training, training_source(run, recipe.model))
    block = recipe.objective.block_size
    train_ds = block_dataset(run.split_file("train"), setup.tokenizer, block)
    if train_ds is None:
        raise PretrainDataError(
            f"{run.split_file('train')}: no text to pretrain on — give data.train a file of "
            f'{{"text": ...}} rows (e.g. examples/demo/handbook.jsonl)'
        )
    eval_ds = block_dataset(run.split_file("validation"), setup.tokenizer, block)
    measured: dict[str, Any] = {}

    def before(trainer: Any) -> None:
        measured["perplexity_before"] = block_perplexity(trainer, eval_ds, adapter_off=True)

    # every position carries loss, so the label-only LM head path would skip nothing
    trainer, info = fit(
        run,
        setup,
        recipe.training,
        train_ds,
        eval_ds,
        PadCollator(setup.tokenizer.pad_token_id),
        resume=resume,
        callbacks=callbacks,
        logits_at_labels_only=False,
        before_train=before,
    )
    info.update(
        measured,
        perplexity_after=block_perplexity(trainer, eval_ds),
        block_size=block,
        train_blocks=len(train_ds),
        validation_blocks=len(eval_ds) if eval_ds is not None else 0,
    )
    run.stage_finished("train", **info)
    return info
