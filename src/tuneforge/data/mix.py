"""Dataset mixing: several training sources with weights or fractions (`data.train: [...]`).

Each source is loaded, validated, cleaned and screened on its own (its own format and field
map); the rows are then deduplicated and split together, so validation and test hold every
source in its natural proportion. The mixture is applied to the training split only, after
the split — repeating a row before splitting would put copies on both sides.

- no weight/fraction: every row once;
- `weight: w`: every row w times (2 = twice, 0.5 = a seeded half; fractional parts sampled);
- `fraction: f`: the source makes up f of the mixed training split. The sources without a
  fraction keep their rows and fix the total (T = their rows / (1 − Σf)); when every source
  has one, T is the rows available. A source with fewer rows than its share repeats them.

Sampling is seeded, so the same data and seed give the same mixture.
"""

from __future__ import annotations

import random
from typing import Any

SOURCE_KEY = "_source"  # index of the source a row came from; removed before the split is written


def _take(rows: list[dict], count: int, rng: random.Random) -> list[dict]:
    """`count` rows: whole copies of `rows`, then a seeded sample for the remainder."""
    if not rows or count <= 0:
        return []
    whole, rest = divmod(count, len(rows))
    return rows * whole + rng.sample(rows, rest)


def mix(rows: list[dict], specs: list[Any], seed: int, names: list[str]) -> tuple[list[dict], dict]:
    """Apply the sources' weights/fractions to training rows tagged with `SOURCE_KEY`.

    >>> class S:
    ...     def __init__(self, weight=None, fraction=None): self.weight, self.fraction = weight, fraction
    >>> rows = [{"i": i, "_source": 0} for i in range(6)] + [{"i": i, "_source": 1} for i in range(2)]
    >>> out, card = mix(rows, [S(), S(fraction=0.5)], 0, ["a", "b"])
    >>> [s["rows_used"] for s in card["sources"]], round(card["sources"][1]["share"], 2)
    ([6, 6], 0.5)
    """
    by_src: dict[int, list[dict]] = {i: [] for i in range(len(specs))}
    for r in rows:
        by_src[r.get(SOURCE_KEY, 0)].append(r)
    fixed = {i: len(by_src[i]) for i, s in enumerate(specs) if s.fraction is None}
    counts: dict[int, int] = {}
    for i, s in enumerate(specs):
        if s.fraction is None:
            w = 1.0 if s.weight is None else s.weight
            counts[i] = round(len(by_src[i]) * w)
    frac_total = sum(s.fraction for s in specs if s.fraction is not None)
    if frac_total:
        if fixed:
            total = sum(counts.values()) / (1 - frac_total)
        else:
            total = sum(len(v) for v in by_src.values())
        for i, s in enumerate(specs):
            if s.fraction is not None:
                counts[i] = round(s.fraction * total)
    rng = random.Random(f"mix\x00{seed}")
    out: list[dict] = []
    for i in range(len(specs)):
        out += _take(by_src[i], counts[i], rng)
    rng.shuffle(out)
    n = max(len(out), 1)
    card = {
        "sources": [
            {
                "name": names[i],
                "rows_available": len(by_src[i]),
                "rows_used": counts[i],
                "share": round(counts[i] / n, 4),
                "weight": specs[i].weight,
                "fraction": specs[i].fraction,
                "repeats": round(counts[i] / len(by_src[i]), 3) if by_src[i] else None,
            }
            for i in range(len(specs))
        ],
        "rows": len(out),
    }
    return out, card


def strip_source(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != SOURCE_KEY} for r in rows]
