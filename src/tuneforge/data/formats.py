"""Detect a row format and normalise every format to OpenAI-style `messages`.

Normalised row: {"messages": [{"role", "content"[, "weight"]}...], **extra}
where `extra` keeps fields the format does not consume (e.g. `expected` answers).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .problems import RowError

ROLES = {"system", "user", "assistant", "tool"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "bot": "assistant", "chatgpt": "assistant", "system": "system", "tool": "tool",
                  "observation": "tool", "function_call": "assistant"}
FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion")


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


_PREDICATES = {"messages": is_messages, "sharegpt": is_sharegpt, "alpaca": is_alpaca,
               "prompt_completion": is_prompt_completion}


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
        {"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return msgs, {"instruction", "input", "output", "system"}


def _from_prompt_completion(row: dict) -> tuple[list[dict], set[str]]:
    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, list) and isinstance(completion, list):  # TRL conversational style
        return list(prompt) + list(completion), {"prompt", "completion"}
    p, c = _text(row, "prompt"), _text(row, "completion")
    return [{"role": "user", "content": p}, {"role": "assistant", "content": c}], {"prompt", "completion"}


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
            raise RowError("message_unrecognized_key", f"{where}.{sorted(extra)[0]}", f"unrecognised key(s) {sorted(extra)}")
        if m["role"] not in ROLES:
            raise RowError("unrecognized_role", f"{where}.role", f"role {m['role']!r} is not one of {sorted(ROLES)}")
        content = m.get("content")
        if content is None and not m.get("tool_calls"):
            raise RowError("missing_content", f"{where}.content", "message has no 'content'")
        if content is not None and not isinstance(content, str):
            if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                content = "".join(str(p.get("text", "")) for p in content)  # OpenAI content parts
            else:
                raise RowError("wrong_type", f"{where}.content", f"content must be a string, got {type(content).__name__}")
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
    else:
        raise RowError("unknown_format", "", f"unknown format {fmt!r}")
    msgs = check_messages(msgs, "messages" if fmt == "messages" else "conversations" if fmt == "sharegpt" else fmt)
    if require_assistant and not any(m["role"] == "assistant" for m in msgs):
        raise RowError("no_assistant_message", "messages", "no assistant message to learn from")
    extra = {k: v for k, v in row.items() if k not in used}
    return {"messages": msgs, **extra}
