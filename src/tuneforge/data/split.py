"""Deterministic, leak-free train/validation/test split.

Rows are grouped by their normalised prompt, so exact repeats of a prompt never land
on both sides of a split; group order comes from a seeded hash, so the same data and
seed always give the same split, and adding rows does not reshuffle the old ones.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict


def prompt_key(row: dict) -> str:
    """>>> prompt_key({"messages": [{"role": "user", "content": " Hi  THERE "}]})
    'hi there'"""
    users = [m["content"] for m in row["messages"] if m["role"] == "user"]
    text = users[0] if users else row["messages"][0]["content"]
    return re.sub(r"\s+", " ", text.strip().lower())


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def split_rows(rows: list[dict], fractions: dict[str, float], seed: int) -> dict[str, list[dict]]:
    """Split rows into named parts; `fractions` maps part -> share, the rest goes to 'train'."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[prompt_key(r)].append(r)
    order = sorted(groups, key=lambda k: _rank(seed, k))
    out: dict[str, list[dict]] = {name: [] for name in fractions}
    out["train"] = []
    cursor = 0
    for name, frac in fractions.items():
        n = round(frac * len(order))
        if frac > 0 and n == 0 and len(order) > 2:
            n = 1
        for k in order[cursor: cursor + n]:
            out[name].extend(groups[k])
        cursor += n
    for k in order[cursor:]:
        out["train"].extend(groups[k])
    return out
