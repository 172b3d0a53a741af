"""Score the PII detector on a labelled corpus: precision and recall per entity type.

Corpus format (tests/assets/pii/corpus.txt): one sentence per line, entities written
inline as `[[TYPE:text]]`, `#` lines are comments. A prediction counts as correct when
it has the gold type and overlaps the gold span (partial-match scoring, as in the
MUC/SemEval "type" criterion); exact-span matches are reported too.

>>> parse_line("Mail [[EMAIL:a@b.io]] now")
('Mail a@b.io now', [('EMAIL', 5, 11)])
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from .pii import TYPES, find_pii

_MARK = re.compile(r"\[\[([A-Z_]+):(.+?)\]\](?!\])")


def parse_line(line: str) -> tuple[str, list[tuple[str, int, int]]]:
    """Plain text and gold spans (type, start, end) of one marked-up line."""
    text, gold, last = [], [], 0
    pos = 0
    for m in _MARK.finditer(line):
        text.append(line[last : m.start()])
        pos += m.start() - last
        gold.append((m.group(1), pos, pos + len(m.group(2))))
        text.append(m.group(2))
        pos += len(m.group(2))
        last = m.end()
    text.append(line[last:])
    return "".join(text), gold


def read_corpus(path: str | Path) -> list[tuple[str, list[tuple[str, int, int]]]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [parse_line(line) for line in lines if line.strip() and not line.startswith("#")]


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def score(corpus: Iterable[tuple[str, list[tuple[str, int, int]]]], types: Iterable[str] = TYPES) -> dict:
    """Per type: gold, predicted, tp, exact, precision, recall, f1; plus the errors for inspection."""
    types = tuple(types)
    c = {t: defaultdict(int) for t in types}
    errors = []
    sentences = 0
    for text, gold in corpus:
        sentences += 1
        pred = [(e.type, e.start, e.end) for e in find_pii(text, types)]
        for t, s, e in gold:
            if t not in c:
                continue
            c[t]["gold"] += 1
            hit = [p for p in pred if p[0] == t and _overlaps((s, e), p[1:])]
            c[t]["found"] += bool(hit)
            c[t]["exact"] += any(p[1:] == (s, e) for p in hit)
            if not hit:
                errors.append({"kind": "missed", "type": t, "text": text[s:e], "sentence": text})
        for t, s, e in pred:
            c[t]["predicted"] += 1
            ok = any(g[0] == t and _overlaps((s, e), g[1:]) for g in gold)
            c[t]["correct"] += ok
            if not ok:
                errors.append({"kind": "false positive", "type": t, "text": text[s:e], "sentence": text})
    out = {}
    for t in types:
        g, p = c[t]["gold"], c[t]["predicted"]
        prec = c[t]["correct"] / p if p else 1.0
        rec = c[t]["found"] / g if g else 1.0
        out[t] = {
            "gold": g,
            "predicted": p,
            "precision": round(prec, 3),
            "recall": round(rec, 3),
            "f1": round(2 * prec * rec / (prec + rec), 3) if prec + rec else 0.0,
            "exact_span": c[t]["exact"],
        }
    return {"sentences": sentences, "per_type": out, "errors": errors}


def render_table(result: dict) -> str:
    lines = [
        f"{result['sentences']} sentences",
        f"{'type':<12} {'gold':>5} {'pred':>5} {'precision':>9} {'recall':>7} {'f1':>6} {'exact':>6}",
    ]
    for t, r in result["per_type"].items():
        lines.append(
            f"{t:<12} {r['gold']:>5} {r['predicted']:>5} {r['precision']:>9.3f} {r['recall']:>7.3f} "
            f"{r['f1']:>6.3f} {r['exact_span']:>6}"
        )
    return "\n".join(lines)
