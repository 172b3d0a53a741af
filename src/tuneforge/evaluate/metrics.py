"""Metrics on generated text and on held-out loss."""

from __future__ import annotations

import math
import re
import string
from typing import Any

_PUNCT = str.maketrans("", "", string.punctuation)


def normalise_answer(text: str) -> str:
    """>>> normalise_answer("  The  Answer! ")
    'the answer'"""
    return re.sub(r"\s+", " ", text.lower().translate(_PUNCT)).strip()


def contains_all(output: str, expected: list[str]) -> bool:
    """Fact accuracy: every expected string appears in the output (case-insensitive).

    >>> contains_all("It costs $1,379.", ["$1,379"])
    True
    """
    low = output.lower()
    return all(e.lower() in low for e in expected)


def exact_match(output: str, reference: str) -> bool:
    return normalise_answer(output) == normalise_answer(reference)


def expected_of(row: dict) -> list[str] | None:
    """The strings a correct answer must contain: `expected` if given, else the reference reply."""
    exp = row.get("expected")
    if isinstance(exp, str):
        return [exp]
    if isinstance(exp, list) and exp:
        return [str(e) for e in exp]
    ref = next((m["content"] for m in reversed(row["messages"]) if m["role"] == "assistant"), None)
    return [ref] if ref else None


def mean_loss(model: Any, tokenizer: Any, rows: list[dict], train_on: str = "assistant", batch_size: int = 8) -> dict:
    """Token-weighted mean loss and perplexity over the label tokens of `rows`."""
    import torch

    from ..data.template import tokenize_messages
    from ..train.collator import PadCollator

    feats = [tokenize_messages(tokenizer, r["messages"], train_on) for r in rows
             if any(m["role"] == "assistant" for m in r["messages"])]
    if not feats:
        return {"loss": None, "perplexity": None, "tokens": 0}
    collate = PadCollator(tokenizer.pad_token_id)
    total, count = 0.0, 0
    model.eval()
    for i in range(0, len(feats), batch_size):
        batch = {k: v.to(model.device) for k, v in collate(feats[i: i + batch_size]).items()}
        labels = batch.pop("labels")
        with torch.inference_mode():
            logits = model(**batch).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
        total += loss.item()
        count += int((shift_labels != -100).sum())
    mean = total / max(count, 1)
    return {"loss": round(mean, 5), "perplexity": round(math.exp(min(mean, 50)), 4), "tokens": count}
