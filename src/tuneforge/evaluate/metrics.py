"""Metrics that need the model: held-out loss, perplexity and mean token accuracy.

Text metrics (fact accuracy, F1, BLEU, ROUGE, ...) live in `text_metrics`; they are
re-exported here because earlier code imported them from this module.
"""

from __future__ import annotations

import math
from typing import Any

from .text_metrics import contains_all, exact_match, expected_of, normalise_answer  # noqa: F401 (re-exports)


def loss_and_accuracy_sums(logits: Any, labels: Any) -> tuple[float, int, int]:
    """(summed cross-entropy, label tokens, tokens whose argmax is the label) for one batch.

    Position t predicts label t+1 (causal shift); labels of -100 are ignored.

    >>> import torch
    >>> logits = torch.tensor([[[0., 9.], [9., 0.], [0., 0.]]])  # predicts 1, then 0
    >>> loss_and_accuracy_sums(logits, torch.tensor([[-100, 1, 1]]))[1:]
    (2, 1)
    """

    shift_labels = labels[:, 1:]
    mask = shift_labels != -100
    return selected_sums(logits[:, :-1][mask], shift_labels[mask])


def selected_sums(logits: Any, targets: Any) -> tuple[float, int, int]:
    """(summed cross-entropy, count, argmax hits) for logits [N, V] already at labelled positions."""
    import torch

    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    return loss.item(), int(targets.numel()), int((logits.argmax(-1) == targets).sum())


def mean_loss(model: Any, tokenizer: Any, rows: list[dict], train_on: str = "assistant", batch_size: int = 8) -> dict:
    """Token-weighted mean loss, perplexity and mean token accuracy over the label tokens of `rows`."""
    import torch

    from ..lm.collator import PadCollator
    from ..lm.loss import labelled_logits
    from ..lm.template import tokenize_messages

    feats = [
        tokenize_messages(tokenizer, r["messages"], train_on)
        for r in rows
        if any(m["role"] == "assistant" for m in r["messages"])
    ]
    if not feats:
        return {"loss": None, "perplexity": None, "token_accuracy": None, "tokens": 0}
    collate = PadCollator(tokenizer.pad_token_id)
    total, count, correct = 0.0, 0, 0
    model.eval()
    for i in range(0, len(feats), batch_size):
        batch = {k: v.to(model.device) for k, v in collate(feats[i : i + batch_size]).items()}
        labels = batch.pop("labels")
        with torch.inference_mode():
            # the LM head only where a label is: same numbers as full logits, far less work
            logits, targets, _ = labelled_logits(model, batch, labels)
        s, n, c = selected_sums(logits, targets)
        total, count, correct = total + s, count + n, correct + c
    mean = total / max(count, 1)
    return {
        "loss": round(mean, 5),
        "perplexity": round(math.exp(min(mean, 50)), 4),
        "token_accuracy": round(correct / max(count, 1), 5),
        "tokens": count,
    }
