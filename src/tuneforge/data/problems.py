"""Row problems: a code users know from OpenAI's chat-format checks, a line, a field, a fix."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

# code -> how to fix it (shown once per code in reports)
FIXES = {
    "invalid_json": "make the line one complete JSON object",
    "invalid_utf8": "save the file as UTF-8",
    "nul_byte": "remove NUL (\\x00) bytes from the line",
    "line_too_long": "split or shorten the example; lines above the size cap are refused",
    "not_an_object": 'each row must be a JSON object like {"messages": [...]}',
    "unknown_format": (
        "use messages, alpaca (instruction/output), sharegpt (conversations), prompt/completion, "
        "prompt/chosen/rejected, input/preferred_output/non_preferred_output, prompt/completion/label, "
        "text/label or text keys; set data.format, or map your columns with data.fields"
    ),
    "missing_messages": "add a 'messages' list",
    "empty_messages": "add at least one user and one assistant message",
    "message_not_object": "each message must be an object with 'role' and 'content'",
    "message_missing_key": "each message needs 'role' and 'content'",
    "message_unrecognized_key": "allowed message keys: role, content, name, weight, tool_calls, tool_call_id",
    "unrecognized_role": "roles are system, user, assistant or tool",
    "missing_content": "give the message a string 'content'",
    "empty_content": "give the message non-empty text",
    "invalid_weight": "'weight' must be 0 or 1",
    "no_assistant_message": "add an assistant reply to learn from",
    "missing_field": "add the field the format requires",
    "wrong_type": "use the type the format requires (text fields are strings)",
    "too_long": "shorten the example or raise data.max_length",
    "unreadable_row": "fix the row",
    "too_short": "lengthen the example or lower data.min_chars",
    "too_many_chars": "shorten the example or raise data.max_chars",
    "too_few_tokens": "lengthen the example or lower data.min_tokens",
    "repeated_lines": "remove the repeated lines (often a scraping or generation loop) or raise data.max_repeated_line_fraction",
    "repeated_chars": "remove the character run (often a generation loop) or raise data.max_char_run",
    "contains_pii": "remove the personal data, or set data.pii=redact to replace it with placeholders",
    "missing_label": "give the row a 'label' (true/false for KTO, a class name for classification)",
    "invalid_label": "KTO labels are true or false; classification labels are strings or integers",
    "empty_text": "give the row non-empty 'text'",
}


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based line (JSONL/CSV) or row number (JSON/Parquet)
    code: str
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", field '{self.field}'" if self.field else "")
        return f"{where}: {self.code}: {self.reason} — fix: {FIXES.get(self.code, 'fix the row')}"

    def to_dict(self) -> dict:
        return asdict(self)


class RowError(ValueError):
    """Raised by row-level checks; caught and turned into a Problem with the row's line."""

    def __init__(self, code: str, field: str, reason: str):
        super().__init__(reason)
        self.code, self.field, self.reason = code, field, reason


def summarise(problems: list[Problem], first: int = 5) -> dict:
    """Counts per code and, per code, the first rows (line, field, reason).

    >>> summarise([Problem(3, "invalid_json", "", "bad")])["counts"]
    {'invalid_json': 1}
    """
    by_code: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        by_code[p.code].append(p)
    return {
        "total": len(problems),
        "counts": {c: len(ps) for c, ps in sorted(by_code.items())},
        "examples": {
            c: [{"line": p.line, "field": p.field, "reason": p.reason} for p in ps[:first]]
            for c, ps in sorted(by_code.items())
        },
        "fixes": {c: FIXES.get(c, "") for c in sorted(by_code)},
    }
