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
    from ..lm.template import tokenize_messages

    feats = [
        tokenize_messages(tokenizer, r["messages"], train_on)
        for r in rows
        if any(m["role"] == "assistant" for m in r["messages"])
    ]
    if not feats:
        return {"loss": None, "perplexity": None, "token_accuracy": None, "tokens": 0}
    # similar lengths together: less padding (the sums do not depend on the order)
    feats.sort(key=lambda f: len(f["input_ids"]))
    collate = PadCollator(tokenizer.pad_token_id)
    total, count, correct = 0.0, 0, 0
    model.eval()
    for i in range(0, len(feats), batch_size):
        chunk = feats[i : i + batch_size]
        with torch.inference_mode():
            logits, targets = _batch_logits(model, collate, chunk)
        s, n, c = selected_sums(logits, targets)
        total, count, correct = total + s, count + n, correct + c
    mean = total / max(count, 1)
    return {
        "loss": round(mean, 5),
        "perplexity": round(math.exp(min(mean, 50)), 4),
        "token_accuracy": round(correct / max(count, 1), 5),
        "tokens": count,
    }


def _batch_logits(model: Any, collate: Any, feats: list[dict]) -> tuple[Any, Any]:
    """(logits, targets) at the labelled positions of one batch. The token prefix every row
    shares without loss (the chat template's system prompt: ~20 of a short question's ~65
    tokens with SmolLM2's default) runs once, as a batch of one, and its KV cache is repeated
    for the rows' own tokens; the LM head runs only where a label is."""
    import torch

    from ..lm.generate import _cache_kwarg
    from ..lm.load import base_of
    from ..lm.loss import labelled_logits

    p = shared_prefix_len(feats) if _plain_decoder(model) else 0
    if not p:
        batch = {k: v.to(model.device) for k, v in collate(feats).items()}
        labels = batch.pop("labels")
        logits, targets, _ = labelled_logits(model, batch, labels)
        return logits, targets
    from transformers import DynamicCache

    cache = DynamicCache(config=getattr(model, "config", None))
    kw = {"use_cache": True, _cache_kwarg(base_of(model)): cache}
    prefix = torch.tensor([feats[0]["input_ids"][:p]], device=model.device)
    model(input_ids=prefix, attention_mask=torch.ones_like(prefix), **kw)
    cache.batch_repeat_interleave(len(feats))
    batch = {k: v.to(model.device) for k, v in collate([_drop(f, p) for f in feats]).items()}
    labels = batch.pop("labels")
    n, width = batch["input_ids"].shape
    batch["attention_mask"] = torch.cat([batch["attention_mask"].new_ones(n, p), batch["attention_mask"]], dim=1)
    batch["position_ids"] = torch.arange(p, p + width, device=model.device).expand(n, width)
    logits, targets, _ = labelled_logits(model, {**batch, **kw}, labels)
    return logits, targets


def shared_prefix_len(feats: list[dict], min_prefix: int = 8) -> int:
    """The loss-free prefix all rows share (0 when shorter than `min_prefix`: a second forward
    for a few tokens does not pay)."""
    from ..lm.collator import shared_prefix

    p = shared_prefix(feats) if len(feats) > 1 else 0
    return p if p >= min_prefix else 0


def _drop(feature: dict, p: int) -> dict:
    return {"input_ids": feature["input_ids"][p:], "labels": feature["labels"][p:]}


def _plain_decoder(model: Any) -> bool:
    """A decoder-only model without PEFT prompt learning: a KV cache it did not build itself is
    read as the tokens before the input (prefix/prompt tuning add their own virtual tokens)."""
    peft = getattr(model, "active_peft_config", None)
    if peft is not None and getattr(peft, "is_prompt_learning", False):
        return False
    return not getattr(getattr(model, "config", None), "is_encoder_decoder", False)
