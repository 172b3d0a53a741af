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


def _part_size(frac: float, n_groups: int) -> int:
    n = round(frac * n_groups)
    return 1 if frac > 0 and n == 0 and n_groups > 2 else n


def _allocate(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Split `total` over strata in proportion to `sizes` (largest remainder), so the part
    has exactly the size an unstratified split would give it.

    >>> _allocate(3, {"a": 6, "b": 3})
    {'a': 2, 'b': 1}
    """
    whole = sum(sizes.values())
    if not whole:
        return {k: 0 for k in sizes}
    exact = {k: total * s / whole for k, s in sizes.items()}
    alloc = {k: min(sizes[k], int(v)) for k, v in exact.items()}
    by_remainder = sorted(sizes, key=lambda k: (-(exact[k] - alloc[k]), k))
    for k in by_remainder:
        if sum(alloc.values()) >= total:
            break
        if alloc[k] < sizes[k]:
            alloc[k] += 1
    return alloc


def split_rows(
    rows: list[dict], fractions: dict[str, float], seed: int, stratify_by: str | None = None
) -> dict[str, list[dict]]:
    """Split rows into named parts; `fractions` maps part -> share, the rest goes to 'train'.

    With `stratify_by` (a field or dotted metadata key), every value keeps its share in
    each part: a prompt group's value is its first row's, and each part draws from every
    value in proportion to how many groups it has left.
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[prompt_key(r)].append(r)
    order = sorted(groups, key=lambda k: _rank(seed, k))
    out: dict[str, list[dict]] = {name: [] for name in fractions}
    out["train"] = []
    if stratify_by is None:
        cursor = 0
        for name, frac in fractions.items():
            n = _part_size(frac, len(order))
            for k in order[cursor : cursor + n]:
                out[name].extend(groups[k])
            cursor += n
        for k in order[cursor:]:
            out["train"].extend(groups[k])
        return out
    from .balance import field_value

    strata: dict[str, list[str]] = defaultdict(list)  # value -> prompt groups, in seeded order
    for k in order:
        strata[field_value(groups[k][0], stratify_by)].append(k)
    for name, frac in fractions.items():
        alloc = _allocate(_part_size(frac, len(order)), {v: len(ks) for v, ks in strata.items()})
        for v, n in alloc.items():
            for k in strata[v][:n]:
                out[name].extend(groups[k])
            strata[v] = strata[v][n:]
    left = {k for ks in strata.values() for k in ks}
    for k in order:  # what is left, in the same seeded order as without stratification
        if k in left:
            out["train"].extend(groups[k])
    return out


def answer_key(row: dict) -> str | None:
    """What a row teaches: its `fact_id` if it has one, else its normalised last assistant reply."""
    if row.get("fact_id") is not None:
        return f"id:{row['fact_id']}"
    replies = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
    return re.sub(r"\s+", " ", str(replies[-1]).strip().lower()) if replies else None


def paraphrase_eligible(rows: list[dict]) -> int:
    """Rows whose answer another row with a different prompt also gives (a paraphrase exists)."""
    prompts: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if (k := answer_key(r)) is not None:
            prompts[k].add(prompt_key(r))
    return sum(1 for r in rows if (k := answer_key(r)) is not None and len(prompts[k]) > 1)


def paraphrase_split(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation): validation rows restate what stays in training in other words.

    Rows are grouped by what they teach (`answer_key`); from groups with at least two
    different prompts, one prompt (all its rows) moves to validation, in seeded order, until
    `fraction` of the rows is reached — so every validation fact is still trained on, and
    validation loss measures whether it is answered in words the model never saw.

    >>> rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    ...         for q, a in [("q1", "A"), ("q2", "A"), ("q3", "B"), ("q4", "B"), ("q5", "C")]]
    >>> train, val = paraphrase_split(rows, 0.4, 0)
    >>> len(train), len(val), {r["messages"][1]["content"] for r in val} <= {"A", "B"}
    (3, 2, True)
    """
    by_answer: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(rows):
        if (k := answer_key(r)) is not None:
            by_answer[k][prompt_key(r)].append(i)
    want = _part_size(fraction, len(rows))
    moved: set[int] = set()
    for k in sorted(by_answer, key=lambda k: _rank(seed, k)):
        if len(moved) >= want:
            break
        groups = by_answer[k]
        if len(groups) < 2:
            continue
        pick = min(groups, key=lambda p: _rank(seed, p))
        moved.update(groups[pick])
    return [r for i, r in enumerate(rows) if i not in moved], [r for i, r in enumerate(rows) if i in moved]
