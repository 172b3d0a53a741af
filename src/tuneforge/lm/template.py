"""Apply the tokenizer's chat template and mask labels so loss falls only where it should."""

from __future__ import annotations

from typing import Any

from ..errors import TuneforgeError

IGNORE_INDEX = -100

# Used only when a tokenizer ships without a chat template (tiny/test or base models).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateError(TuneforgeError, ValueError):
    pass


def ensure_chat_template(tokenizer: Any) -> Any:
    """Give a template-less tokenizer ChatML (and a pad token), so train and chat agree."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def render(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False) -> str:
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)


def prompt_messages(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) the last assistant reply, for generation."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    return messages[:last]


def assistant_spans(
    tokenizer: Any, messages: list[dict], train_on: str = "assistant"
) -> tuple[str, list[tuple[int, int]]]:
    """Full rendered text and the character spans that carry loss.

    An assistant span runs from the end of the generation prompt that precedes it to
    the end of that turn in the template (so the end-of-turn token is learnt too).
    Messages with weight 0 carry no loss (OpenAI's per-message weight).
    """
    full = render(tokenizer, messages)
    if train_on == "all":
        return full, [(0, len(full))]
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("weight", 1) == 0:
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        through = render(tokenizer, messages[: i + 1])
        if not full.startswith(through) or not through.startswith(before):
            raise TemplateError(
                "the chat template renders a conversation differently from its prefixes, so assistant "
                "tokens cannot be located — set data.train_on=all or use a prefix-stable template"
            )
        spans.append((len(before), len(through)))
    return full, spans


def tokenize_messages(tokenizer: Any, messages: list[dict], train_on: str = "assistant") -> dict[str, list[int]]:
    """input_ids + labels (IGNORE_INDEX outside loss spans).

    The template text already holds its special tokens, so none are added here.
    """
    text, spans = assistant_spans(tokenizer, messages, train_on)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = []
    for tok, (start, end) in zip(ids, offsets):
        inside = any(s <= start < e for s, e in spans) if end > start else False
        labels.append(tok if inside else IGNORE_INDEX)
    return {"input_ids": list(ids), "labels": labels}
