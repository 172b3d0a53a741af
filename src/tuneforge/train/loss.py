"""Causal-LM loss computed only where labels are (the LM head skips prompt positions)."""

from __future__ import annotations

from typing import Any

import torch

from ..data.template import IGNORE_INDEX


def label_positions_loss(model: Any, inputs: dict[str, Any], labels: torch.Tensor) -> tuple[torch.Tensor, int, Any]:
    """Summed next-token cross-entropy over labelled positions, the target count, and the outputs.

    Position i predicts token i+1, so the LM head runs only at positions whose next
    label is set: through `logits_to_keep` (a tensor of positions), the union over
    rows of a padded batch or exactly the labelled positions of a packed row.

    >>> # loss_sum, n, _ = label_positions_loss(model, {"input_ids": ids}, labels)
    """
    targets_all = labels[..., 1:]
    has = targets_all != IGNORE_INDEX
    keep = has.any(0).nonzero().squeeze(-1)
    outputs = model(**{"use_cache": False, **inputs}, logits_to_keep=keep)  # training never needs a KV cache
    sel = has[:, keep]
    logits = outputs.logits[sel]
    targets = targets_all[:, keep][sel]
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    return loss, int(targets.numel()), outputs
