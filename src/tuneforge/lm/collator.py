"""Pad tokenised examples into a batch; padded label positions never carry loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .template import IGNORE_INDEX


@dataclass
class PadCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        ids, labels, mask = [], [], []
        for f in features:
            n = len(f["input_ids"])
            pad = longest - n
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            mask.append([1] * n + [0] * pad)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


@dataclass
class PackedCollator:
    """Padding-free batch: all examples concatenated into one row.

    `position_ids` restart at 0 for each example; with no attention mask, transformers
    reads the restarts as sequence boundaries and builds a block-diagonal causal mask, so
    examples never attend to each other. transformers only looks for those restarts when
    no KV cache is built, so `use_cache=False` is part of the batch (with the cache on,
    the examples would silently attend across boundaries). The first label of every
    example is masked so no example is trained to predict the next one's first token.
    """

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids, labels, pos = [], [], []
        for f in features:
            n = len(f["input_ids"])
            ids += list(f["input_ids"])
            labels += [IGNORE_INDEX] + list(f["labels"][1:])
            pos += list(range(n))
        return {
            "input_ids": torch.tensor([ids]),
            "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([pos]),
            "use_cache": False,
        }
