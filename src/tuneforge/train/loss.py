"""Causal-LM loss computed only where labels are (the LM head skips prompt positions)."""

from __future__ import annotations

from typing import Any

import torch

from ..data.template import IGNORE_INDEX


def labelled_logits(model: Any, inputs: dict[str, Any], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(logits [N, V], targets [N], outputs) at exactly the positions whose next token has a label.

    Position i predicts token i+1, so the LM head runs only at positions whose next
    label is set: through `logits_to_keep` (a tensor of positions), the union over
    rows of a padded batch or exactly the labelled positions of a packed row.
    """
    targets_all = labels[..., 1:]
    has = targets_all != IGNORE_INDEX
    keep = has.any(0).nonzero().squeeze(-1)
    outputs = model(**{"use_cache": False, **inputs}, logits_to_keep=keep)  # training never needs a KV cache
    sel = has[:, keep]
    return outputs.logits[sel], targets_all[:, keep][sel], outputs


def label_positions_loss(model: Any, inputs: dict[str, Any], labels: torch.Tensor) -> tuple[torch.Tensor, int, Any]:
    """Summed next-token cross-entropy over labelled positions, the target count, and the outputs.

    >>> # loss_sum, n, _ = label_positions_loss(model, {"input_ids": ids}, labels)
    """
    logits, targets, outputs = labelled_logits(model, inputs, labels)
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    return loss, int(targets.numel()), outputs
