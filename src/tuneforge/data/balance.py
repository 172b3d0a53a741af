"""Balance: which value of a field (label, intent, a metadata key) each row has, capped and
upsampled training rows, and the per-split distribution for the data card.

Only the training split is capped or upsampled: validation and test keep the data's
natural distribution, so the metrics they give stay honest about the real mix.

>>> field_value({"metadata": {"topic": "billing"}}, "metadata.topic")
'billing'
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from typing import Any

MISSING = "(missing)"


def field_value(row: dict, key: str) -> str:
    """The value of `key` in a row as a string; a dotted key walks nested objects.

    A row without the key falls in its own group, MISSING, so it is never silently lost.

    >>> field_value({"label": True}, "label"), field_value({}, "label")
    ('True', '(missing)')
    """
    node: Any = row
    if key in row:  # a column whose name itself holds a dot
        node = row[key]
    else:
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return MISSING
            node = node[part]
    if node is None:
        return MISSING
    if isinstance(node, (dict, list)):
        return json.dumps(node, ensure_ascii=False, sort_keys=True)
    return str(node)


def distribution(rows: list[dict], key: str) -> dict[str, int]:
    """Rows per value, most common first.

    >>> distribution([{"label": "a"}, {"label": "b"}, {"label": "a"}], "label")
    {'a': 2, 'b': 1}
    """
    return dict(Counter(field_value(r, key) for r in rows).most_common())


def _by_value(rows: list[dict], key: str, seed: int) -> dict[str, list[dict]]:
    """Rows grouped by value, each group in a seeded pseudo-random order (same seed, same order)."""
    groups: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for i, r in enumerate(rows):
        rank = hashlib.sha256(f"{seed}\x00{r.get('_line', i)}\x00{i}".encode()).hexdigest()
        groups[field_value(r, key)].append((rank, r))
    return {v: [r for _, r in sorted(g, key=lambda x: x[0])] for v, g in groups.items()}


def cap_rows(rows: list[dict], key: str, cap: int, seed: int) -> tuple[list[dict], dict[str, int]]:
    """Keep at most `cap` rows per value of `key` (a seeded sample); the dropped count per value.

    Kept rows stay in their original order, so the file still reads top to bottom.
    """
    keep: set[int] = set()
    dropped: dict[str, int] = {}
    ids = {id(r): i for i, r in enumerate(rows)}
    for value, group in _by_value(rows, key, seed).items():
        keep.update(ids[id(r)] for r in group[:cap])
        if len(group) > cap:
            dropped[value] = len(group) - cap
    return [r for i, r in enumerate(rows) if i in keep], dropped


def upsample_rows(
    rows: list[dict], key: str, seed: int, target: int | None = None
) -> tuple[list[dict], dict[str, int]]:
    """Repeat rows of rarer values until each value has `target` rows (default: the most
    common value's count): inverse-frequency weighted sampling, written into the file so any
    trainer sees it. Copies are whole passes over a value's rows in a seeded order, so no row
    is repeated twice before every row of its value was repeated once.

    >>> rows = [{"label": "a"}] * 4 + [{"label": "b"}]
    >>> out, added = upsample_rows(rows, "label", 0)
    >>> distribution(out, "label"), added
    ({'a': 4, 'b': 4}, {'b': 3})
    """
    groups = _by_value(rows, key, seed)
    if not groups:
        return rows, {}
    goal = target or max(len(g) for g in groups.values())
    out, added = list(rows), {}
    for value, group in groups.items():
        need = goal - len(group)
        if need > 0:
            out += [dict(group[i % len(group)]) for i in range(need)]
            added[value] = need
    return out, added


def check_balance_config(stratify_by: str | None, max_per_label: int | None, balance: str) -> None:
    """Settings that only make sense together; raised before any data is read."""
    if stratify_by is None and (max_per_label is not None or balance != "off"):
        from ..recipe import RecipeError

        what = "data.max_per_label" if max_per_label is not None else f"data.balance={balance}"
        raise RecipeError(
            [
                f"{what} needs data.stratify_by (the field whose values are counted) — add e.g. "
                f"data.stratify_by=label or data.stratify_by=metadata.topic"
            ]
        )


def balance_train(rows: list[dict], key: str, max_per_label: int | None, seed: int) -> tuple[list[dict], dict]:
    """Cap the training rows per value; returns the rows and the card entry."""
    report: dict[str, Any] = {
        "field": key,
        "before": distribution(rows, key),
        "max_per_label": max_per_label,
        "capped": {},
        "upsampled": {},
    }
    if max_per_label is not None:
        rows, report["capped"] = cap_rows(rows, key, max_per_label, seed)
    return rows, report


def maybe_warn_missing(report: dict) -> list[str]:
    """A warning when many rows lack the stratify field (usually a typo in the key)."""
    before = report.get("before", {})
    total = sum(before.values())
    miss = before.get(MISSING, 0)
    if total and miss / total > 0.5:
        return [
            f"data.stratify_by={report['field']}: {miss} of {total} training row(s) have no such field — "
            f"check the key (a nested key is written metadata.topic)"
        ]
    return []


def render_balance(report: dict) -> list[str]:
    """Data-card lines for the balance entry."""
    key = report["field"]
    lines = ["", f"## Balance by `{key}`", ""]
    for split, counts in report.get("by_split", {}).items():
        total = sum(counts.values())
        shown = ", ".join(f"{v} {n} ({n / total:.0%})" for v, n in list(counts.items())[:12])
        lines.append(f"- {split}: {shown or 'no rows'}" + (" …" if len(counts) > 12 else ""))
    if report.get("stratified"):
        lines.append(
            f"- stratified split: {' and '.join(report['stratified'])} split off the training data with "
            f"each value's share kept"
        )
    if report.get("capped"):
        lines.append(
            f"- capped at {report['max_per_label']} training row(s) per value (seeded sample); dropped: "
            + ", ".join(f"{v} {n}" for v, n in report["capped"].items())
        )
    if report.get("upsampled"):
        lines.append(
            "- upsampled (rows repeated so every value is as common as the most common one): "
            + ", ".join(f"{v} +{n}" for v, n in report["upsampled"].items())
        )
    return lines
