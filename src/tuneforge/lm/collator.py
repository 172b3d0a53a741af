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

    `share_prefix` (only for `train/attention.py`'s attention, which reads it back from the
    positions): the token prefix every example of the batch starts with — a chat template's
    default system prompt, a shared instruction — is kept once, at the start of the row; the
    other examples keep only their rest, with positions continuing from the prefix length, and
    attend to that one copy. Causal attention makes the prefix's states the same in every
    example, so losses and gradients are those of the unshared row, for less compute (SmolLM2's
    template puts the same 21-token system prompt before every chat: a third of the demo's
    tokens). The prefix stops before the first labelled token of any example (a shared labelled
    token must still be trained once per example), and short prefixes are not worth the
    bookkeeping.

    >>> f = [{"input_ids": [5, 6, 7, 8, 1], "labels": [-100, -100, -100, 8, 1]},
    ...      {"input_ids": [5, 6, 7, 9, 2], "labels": [-100, -100, -100, 9, 2]}]
    >>> b = PackedCollator(share_prefix=True, min_prefix=2)(f)
    >>> b["input_ids"].tolist(), b["position_ids"].tolist()
    ([[5, 6, 7, 8, 1, 7, 9, 2]], [[0, 1, 2, 3, 4, 2, 3, 4]])
    >>> b["labels"].tolist()
    [[-100, -100, -100, 8, 1, -100, 9, 2]]
    """

    share_prefix: bool = False
    min_prefix: int = 8

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        p = shared_prefix(features) if self.share_prefix and len(features) > 1 else 0
        if p < self.min_prefix:
            p = 0
        ids, labels, pos = [], [], []
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            skip = p if i else 0  # the first example carries the prefix for all of them
            ids += list(f["input_ids"][skip:])
            labels += [IGNORE_INDEX] + list(f["labels"][skip + 1 :])
            pos += list(range(skip, n))
        return {
            "input_ids": torch.tensor([ids]),
            "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([pos]),
            "use_cache": False,
        }


def shared_prefix(features: list[dict[str, Any]]) -> int:
    """Length of the token prefix all examples share that carries no loss, not even as the
    target right after it (that target is predicted from the prefix's last state, which the
    packed row keeps only once); always leaves every example at least one token of its own.

    >>> shared_prefix([{"input_ids": [1, 2, 3], "labels": [-100, -100, 3]},
    ...                {"input_ids": [1, 2, 4, 5], "labels": [-100, -100, -100, 5]}])
    1
    """
    first = features[0]["input_ids"]
    p = min(len(f["input_ids"]) for f in features) - 1
    for f in features:
        ids = f["input_ids"]
        i = 0
        while i < p and ids[i] == first[i]:
            i += 1
        p = i
        labelled = next((j for j, t in enumerate(f["labels"]) if t != IGNORE_INDEX), len(ids))
        p = min(p, labelled - 1)
    return max(p, 0)
