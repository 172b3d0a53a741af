"""Clean message text and filter rows that are not worth training on.

Cleaning rewrites text conservatively (Unicode normalisation, invisible characters, line
ends, trailing spaces, optionally HTML); filtering drops a row with a Problem that says
why, so the data card can count it. Indentation inside lines is kept: code answers need it.

>>> clean_text("  Caf\\u0065\\u0301\\u200b menu\\r\\n\\n\\n\\nnext  ")
'Café menu\\n\\nnext'
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from .problems import Problem

# zero-width and bidi control characters: invisible, yet they split tokens and words
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u202a-\u202e\u2066-\u2069\u00ad]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HTML_TAG = re.compile(
    r"</?(?:html|head|body|p|div|span|br|hr|b|i|u|em|strong|a|ul|ol|li|h[1-6]|table|thead|tbody|tr|td|th|img|"
    r"font|center|small|sup|sub|blockquote|pre|code|section|article|header|footer|nav|label|input|button|form)"
    r"\b[^<>]*/?>",
    re.I,
)
_HTML_BLOCK = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_HTML_BREAK = re.compile(r"<(?:br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>", re.I)


@dataclass(frozen=True)
class CleanConfig:
    """The cleaning part of DataConfig (kept narrow so clean.py does not need the recipe)."""

    unicode_form: str = "NFC"
    strip_html: bool = False
    min_chars: int = 0
    max_chars: Optional[int] = None
    max_repeated_line_fraction: float = 0.5
    max_char_run: int = 64

    @classmethod
    def from_data_config(cls, cfg) -> CleanConfig:
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__ if hasattr(cfg, k)})


def is_html(text: str) -> bool:
    """Does the text hold real HTML tags (not `<EMAIL>` placeholders or comparisons)?

    >>> is_html("<p>Hello</p>"), is_html("a < b and c > d"), is_html("<EMAIL>")
    (True, False, False)
    """
    return bool(_HTML_TAG.search(text) or _HTML_BLOCK.search(text))


def maybe_strip_html(text: str) -> str:
    """Remove HTML tags (keeping line breaks) and unescape entities; plain text is returned as is.

    >>> maybe_strip_html("<p>Tom &amp; Jerry</p><p>Hi<br>there</p>")
    'Tom & Jerry\\nHi\\nthere'
    """
    if not is_html(text):
        return text
    text = _HTML_BLOCK.sub("", text)
    text = _HTML_BREAK.sub("\n", text)
    text = _HTML_TAG.sub("", text)
    return html.unescape(text).strip()


def normalise_whitespace(text: str) -> str:
    """Unix line ends, no trailing spaces, at most one blank line in a row, trimmed ends."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def clean_text(text: str, unicode_form: str = "NFC", strip_html: bool = False) -> str:
    if unicode_form in ("NFC", "NFKC"):
        text = unicodedata.normalize(unicode_form, text)
    text = _CONTROL.sub("", _INVISIBLE.sub("", text))
    if strip_html:
        text = maybe_strip_html(text)
    return normalise_whitespace(text)


def repeated_line_fraction(text: str) -> float:
    """Share of non-empty lines that repeat an earlier line (0 for texts under 4 lines).

    >>> repeated_line_fraction("a\\na\\na\\nb")
    0.5
    """
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if len(lines) < 4:
        return 0.0
    counts = Counter(lines)
    return sum(n - 1 for n in counts.values()) / len(lines)


def longest_char_run(text: str) -> int:
    """Longest run of one repeated non-space character.

    >>> longest_char_run("hmmmm ok")
    4
    """
    best, run, prev = 0, 0, ""
    for c in text:
        run = run + 1 if c == prev and not c.isspace() else 1
        prev = c
        best = max(best, run)
    return best


def row_problem(row: dict, cfg: CleanConfig) -> Optional[Problem]:
    """Why a (cleaned) row should not be trained on, or None."""
    line = row.get("_line", 0)
    texts = [m["content"] for m in row["messages"] if m.get("content")]
    n = sum(len(t) for t in texts)
    if n < cfg.min_chars:
        return Problem(line, "too_short", "messages", f"{n} characters < data.min_chars={cfg.min_chars}")
    if cfg.max_chars is not None and n > cfg.max_chars:
        return Problem(line, "too_many_chars", "messages", f"{n:,} characters > data.max_chars={cfg.max_chars:,}")
    for i, m in enumerate(row["messages"]):
        t = m.get("content") or ""
        frac = repeated_line_fraction(t)
        if frac > cfg.max_repeated_line_fraction:
            return Problem(
                line,
                "repeated_lines",
                f"messages[{i}].content",
                f"{frac:.0%} of lines are repeats > data.max_repeated_line_fraction="
                f"{cfg.max_repeated_line_fraction:.0%}",
            )
        run = longest_char_run(t)
        if run >= cfg.max_char_run:
            return Problem(
                line,
                "repeated_chars",
                f"messages[{i}].content",
                f"a character repeats {run} times in a row (data.max_char_run={cfg.max_char_run})",
            )
    return None


def clean_row(row: dict, cfg: CleanConfig) -> dict:
    msgs = []
    for m in row["messages"]:
        if isinstance(m.get("content"), str):
            m = {**m, "content": clean_text(m["content"], cfg.unicode_form, cfg.strip_html)}
        msgs.append(m)
    return {**row, "messages": msgs}


def clean_rows(rows: list[dict], cfg: CleanConfig) -> tuple[list[dict], list[Problem], int]:
    """(kept rows, problems of dropped rows, number of rows whose text changed).

    A row whose message becomes empty after cleaning (e.g. it held only HTML tags or
    invisible characters) is dropped: it would otherwise be an empty sample.
    """
    kept, problems, changed = [], [], 0
    for r in rows:
        new = clean_row(r, cfg)
        changed += new["messages"] != r["messages"]
        empty = next(
            (i for i, m in enumerate(new["messages"]) if m.get("content") == "" and not m.get("tool_calls")), None
        )
        if empty is not None:
            problems.append(
                Problem(
                    r.get("_line", 0), "empty_content", f"messages[{empty}].content", "content is empty after cleaning"
                )
            )
            continue
        p = row_problem(new, cfg)
        if p:
            problems.append(p)
            continue
        kept.append(new)
    return kept, problems, changed
