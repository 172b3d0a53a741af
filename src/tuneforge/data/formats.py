"""Detect a row format and normalise every format to OpenAI-style `messages`.

Normalised row: {"messages": [{"role", "content"[, "weight"]}...], **extra}
where `extra` keeps fields the format does not consume (e.g. `expected` answers).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..recipe import DATA_FORMATS
from .problems import RowError

ROLES = {"system", "user", "assistant", "tool"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id"}
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "system": "system",
    "tool": "tool",
    "observation": "tool",
    "function_call": "assistant",
}
FORMATS = DATA_FORMATS
# formats whose rows are (or contain) a conversation to fine-tune on with SFT: all but raw text
SFT_FORMATS = tuple(f for f in FORMATS if f != "text")


def is_messages(row: Any) -> bool:
    """>>> is_messages({"messages": []})
    True"""
    return isinstance(row, dict) and "messages" in row


def is_sharegpt(row: Any) -> bool:
    return isinstance(row, dict) and "conversations" in row


def is_alpaca(row: Any) -> bool:
    """>>> is_alpaca({"instruction": "Say hi", "output": "hi"})
    True"""
    return isinstance(row, dict) and "instruction" in row and "output" in row


def is_prompt_completion(row: Any) -> bool:
    return isinstance(row, dict) and "prompt" in row and "completion" in row


def is_preference(row: Any) -> bool:
    """TRL preference rows.

    >>> is_preference({"prompt": "q", "chosen": "good", "rejected": "bad"})
    True
    """
    return isinstance(row, dict) and "chosen" in row and "rejected" in row


def is_openai_preference(row: Any) -> bool:
    """OpenAI's DPO fine-tuning format.

    >>> is_openai_preference({"input": {}, "preferred_output": []})
    True
    """
    return isinstance(row, dict) and "input" in row and "preferred_output" in row


def is_kto(row: Any) -> bool:
    """Unpaired preference (KTO).

    >>> is_kto({"prompt": "q", "completion": "a", "label": True})
    True
    """
    return is_prompt_completion(row) and "label" in row


def is_classification(row: Any) -> bool:
    return isinstance(row, dict) and "text" in row and "label" in row


def is_text(row: Any) -> bool:
    """Raw text for continued pretraining.

    >>> is_text({"text": "Once upon a time"})
    True
    """
    return isinstance(row, dict) and "text" in row


# order matters: the first predicate a row matches names its format (kto before prompt/completion)
_PREDICATES = {
    "messages": is_messages,
    "sharegpt": is_sharegpt,
    "openai_preference": is_openai_preference,
    "preference": is_preference,
    "kto": is_kto,
    "alpaca": is_alpaca,
    "prompt_completion": is_prompt_completion,
    "classification": is_classification,
    "text": is_text,
}


def detect_format(rows: list[Any], sample: int = 200) -> str | None:
    """The format most of the first `sample` object rows match (None if none does)."""
    votes: Counter[str] = Counter()
    for row in rows[:sample]:
        for name, pred in _PREDICATES.items():
            if pred(row):
                votes[name] += 1
                break
    return votes.most_common(1)[0][0] if votes else None


def _text(row: dict, key: str, required: bool = True) -> str | None:
    if key not in row or row[key] is None:
        if required:
            raise RowError("missing_field", key, f"'{key}' is missing")
        return None
    if not isinstance(row[key], str):
        raise RowError("wrong_type", key, f"'{key}' must be a string, got {type(row[key]).__name__}")
    return row[key]


def _from_alpaca(row: dict) -> tuple[list[dict], set[str]]:
    instruction = _text(row, "instruction")
    extra_input = _text(row, "input", required=False)
    output = _text(row, "output")
    system = _text(row, "system", required=False)
    user = instruction if not extra_input else f"{instruction}\n\n{extra_input}"
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": output},
    ]
    return msgs, {"instruction", "input", "output", "system"}


def _from_prompt_completion(row: dict) -> tuple[list[dict], set[str]]:
    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, list) and isinstance(completion, list):  # TRL conversational style
        return list(prompt) + list(completion), {"prompt", "completion"}
    p, c = _text(row, "prompt"), _text(row, "completion")
    return [{"role": "user", "content": p}, {"role": "assistant", "content": c}], {"prompt", "completion"}


def _turns(value: Any, key: str, role: str) -> list[dict]:
    """A string becomes one message of `role`; a list is taken as messages (TRL conversational style)."""
    if isinstance(value, list):
        return list(value)
    if value is None:
        raise RowError("missing_field", key, f"'{key}' is missing")
    if not isinstance(value, str):
        raise RowError("wrong_type", key, f"'{key}' must be a string or a list of messages, got {type(value).__name__}")
    return [{"role": role, "content": value}]


def _common_prefix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) - 1 and a[n] == b[n]:
        n += 1
    return n


def _from_preference(row: dict) -> tuple[list[dict], set[str], dict]:
    """prompt/chosen/rejected (TRL); without 'prompt', chosen and rejected share the prompt as a prefix."""
    chosen, rejected = (
        _turns(row.get("chosen"), "chosen", "assistant"),
        _turns(row.get("rejected"), "rejected", "assistant"),
    )
    if "prompt" in row:
        prompt = _turns(row["prompt"], "prompt", "user")
    else:
        n = _common_prefix(chosen, rejected)
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    rejected = check_messages(rejected, "rejected")
    return prompt + chosen, {"prompt", "chosen", "rejected"}, {"rejected": rejected}


def _from_openai_preference(row: dict) -> tuple[list[dict], set[str], dict]:
    inp = row.get("input")
    if not isinstance(inp, dict) or not isinstance(inp.get("messages"), list):
        raise RowError("missing_field", "input.messages", "'input' must be an object with a 'messages' list")
    if "non_preferred_output" not in row:
        raise RowError("missing_field", "non_preferred_output", "'non_preferred_output' is missing")
    preferred = _turns(row["preferred_output"], "preferred_output", "assistant")
    rejected = check_messages(
        _turns(row["non_preferred_output"], "non_preferred_output", "assistant"), "non_preferred_output"
    )
    return (
        list(inp["messages"]) + preferred,
        {"input", "preferred_output", "non_preferred_output"},
        {"rejected": rejected},
    )


def _label_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")  # CSV files carry booleans as text
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise RowError("invalid_label", "label", f"KTO label must be true or false, got {value!r}")


def _from_kto(row: dict) -> tuple[list[dict], set[str], dict]:
    """prompt/completion/label: an undesirable completion (label false) gets weight 0, so SFT
    never learns it; KTO trainers read `label` (see `to_kto`)."""
    if row.get("label") is None:
        raise RowError("missing_label", "label", "'label' is missing")
    label = _label_bool(row["label"])
    completion = [
        dict(m) if isinstance(m, dict) else m for m in _turns(row.get("completion"), "completion", "assistant")
    ]
    if not label:
        for m in completion:
            if isinstance(m, dict) and m.get("role") == "assistant":
                m["weight"] = 0
    return _turns(row.get("prompt"), "prompt", "user") + completion, {"prompt", "completion", "label"}, {"label": label}


def _from_classification(row: dict) -> tuple[list[dict], set[str], dict]:
    text, label = _text(row, "text"), row.get("label")
    if label is None or (isinstance(label, str) and not label.strip()):
        raise RowError("missing_label", "label", "'label' is missing")
    if not isinstance(label, (str, int)) or isinstance(label, bool):
        raise RowError("invalid_label", "label", f"label must be a string or an integer, got {type(label).__name__}")
    return (
        [{"role": "user", "content": text}, {"role": "assistant", "content": str(label)}],
        {"text"},
        {},
    )  # 'label' stays in the row for balance reports


def _from_text(row: dict) -> tuple[list[dict], set[str], dict]:
    """Raw text becomes one assistant turn: loss falls on the text itself."""
    text = _text(row, "text")
    if not text.strip():
        raise RowError("empty_text", "text", "text is empty")
    return [{"role": "assistant", "content": text}], {"text"}, {}


def to_preference(row: dict) -> dict:
    """A normalised preference row back in TRL's conversational prompt/chosen/rejected form."""
    msgs = row["messages"]
    last = max((i for i, m in enumerate(msgs) if m["role"] != "assistant"), default=-1) + 1
    return {"prompt": msgs[:last], "chosen": msgs[last:], "rejected": row["rejected"]}


def to_kto(row: dict) -> dict:
    """A normalised KTO row back in TRL's prompt/completion/label form."""
    msgs = [{k: v for k, v in m.items() if k != "weight"} for m in row["messages"]]
    last = max((i for i, m in enumerate(msgs) if m["role"] != "assistant"), default=-1) + 1
    return {"prompt": msgs[:last], "completion": msgs[last:], "label": row["label"]}


def apply_field_map(row: Any, fields: dict[str, str]) -> Any:
    """Rename a row's own columns to the names its format expects (recipe `data.fields`).

    >>> apply_field_map({"question": "q", "answer": "a"}, {"prompt": "question", "completion": "answer"})
    {'prompt': 'q', 'completion': 'a'}
    """
    if not fields or not isinstance(row, dict):
        return row
    sources = set(fields.values())
    out = {k: v for k, v in row.items() if k not in sources}
    for canonical, source in fields.items():
        if source in row:
            out[canonical] = row[source]
    return out


def _from_sharegpt(row: dict) -> tuple[list[dict], set[str]]:
    conv = row["conversations"]
    if not isinstance(conv, list):
        raise RowError("wrong_type", "conversations", "'conversations' must be a list of turns")
    msgs = []
    for i, turn in enumerate(conv):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise RowError("message_not_object", where, f"turn is {type(turn).__name__}, not an object")
        who = turn.get("from", turn.get("role"))
        if who is None:
            raise RowError("message_missing_key", f"{where}.from", "turn has no 'from'")
        role = SHAREGPT_ROLES.get(str(who).lower())
        if role is None:
            raise RowError("unrecognized_role", f"{where}.from", f"unknown speaker {who!r}")
        msgs.append({"role": role, "content": turn.get("value", turn.get("content"))})
    if isinstance(row.get("system"), str) and row["system"]:
        msgs.insert(0, {"role": "system", "content": row["system"]})
    return msgs, {"conversations", "system"}


def check_messages(msgs: Any, field: str = "messages") -> list[dict]:
    """Validate a messages list; raise RowError for the first problem found."""
    if not isinstance(msgs, list):
        raise RowError("wrong_type", field, f"'{field}' must be a list, got {type(msgs).__name__}")
    if not msgs:
        raise RowError("empty_messages", field, "no messages")
    out = []
    for i, m in enumerate(msgs):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise RowError("message_not_object", where, f"message is {type(m).__name__}, not an object")
        if "role" not in m:
            raise RowError("message_missing_key", f"{where}.role", "message has no 'role'")
        extra = set(m) - MESSAGE_KEYS
        if extra:
            raise RowError(
                "message_unrecognized_key", f"{where}.{sorted(extra)[0]}", f"unrecognised key(s) {sorted(extra)}"
            )
        if m["role"] not in ROLES:
            raise RowError("unrecognized_role", f"{where}.role", f"role {m['role']!r} is not one of {sorted(ROLES)}")
        content = m.get("content")
        if content is None and not m.get("tool_calls"):
            raise RowError("missing_content", f"{where}.content", "message has no 'content'")
        if content is not None and not isinstance(content, str):
            if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                content = "".join(str(p.get("text", "")) for p in content)  # OpenAI content parts
            else:
                raise RowError(
                    "wrong_type", f"{where}.content", f"content must be a string, got {type(content).__name__}"
                )
        if isinstance(content, str) and not content.strip():
            raise RowError("empty_content", f"{where}.content", "content is empty")
        clean = {"role": m["role"], "content": content or ""}
        if "weight" in m:
            if m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
                raise RowError("invalid_weight", f"{where}.weight", f"weight {m['weight']!r} is not 0 or 1")
            clean["weight"] = int(m["weight"])
        out.append(clean)
    return out


def normalise(row: Any, fmt: str, require_assistant: bool = True) -> dict:
    """Turn one row of format `fmt` into {"messages": [...], **extra}; raise RowError if invalid.

    >>> normalise({"prompt": "2+2?", "completion": "4"}, "prompt_completion")["messages"][1]
    {'role': 'assistant', 'content': '4'}
    """
    if not isinstance(row, dict):
        raise RowError("not_an_object", "", f"row is a JSON {type(row).__name__}, not an object")
    added: dict = {}
    if fmt == "messages":
        if "messages" not in row:
            raise RowError("missing_messages", "messages", "row has no 'messages' key")
        msgs, used = row["messages"], {"messages"}
    elif fmt == "alpaca":
        msgs, used = _from_alpaca(row)
    elif fmt == "sharegpt":
        if "conversations" not in row:
            raise RowError("missing_field", "conversations", "row has no 'conversations' key")
        msgs, used = _from_sharegpt(row)
    elif fmt == "prompt_completion":
        msgs, used = _from_prompt_completion(row)
    elif fmt in _BUILDERS:
        msgs, used, added = _BUILDERS[fmt](row)
    else:
        raise RowError("unknown_format", "", f"unknown format {fmt!r}")
    msgs = check_messages(msgs, _FIELD.get(fmt, fmt))
    if require_assistant and not any(m["role"] == "assistant" for m in msgs):
        raise RowError("no_assistant_message", "messages", "no assistant message to learn from")
    # the normalised messages always win: a stray `messages` key in a row of another
    # format (found by the loader fuzz test) must not overwrite them
    extra = {k: v for k, v in row.items() if k not in used and k != "messages"}
    return {"messages": msgs, **extra, **added}


_BUILDERS = {
    "preference": _from_preference,
    "openai_preference": _from_openai_preference,
    "kto": _from_kto,
    "classification": _from_classification,
    "text": _from_text,
}
_FIELD = {
    "messages": "messages",
    "sharegpt": "conversations",
    "openai_preference": "input.messages",
    "text": "text",
    "classification": "text",
}
