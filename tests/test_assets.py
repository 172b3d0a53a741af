"""The shipped general pool (replay) and general suite (regression): sizes, shapes, no overlap."""

from __future__ import annotations

import json
import re

from tuneforge.assets import asset
from tuneforge.data.validate import load_validated
from tuneforge.evaluate.text_metrics import contains_all, expected_of


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in asset(name).read_text(encoding="utf-8").splitlines() if line.strip()]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _question(row: dict) -> str:
    return next(m["content"] for m in row["messages"] if m["role"] == "user")


def test_pool_is_large_diverse_and_loads_as_prompts():
    rows = _rows("general_pool.jsonl")
    assert len(rows) >= 300
    cats = {r["category"] for r in rows}
    assert len(cats) >= 10
    data = load_validated(asset("general_pool.jsonl"), require_assistant=False)
    assert len(data.rows) == len(rows) and not data.problems
    assert len({_question(r).strip().lower() for r in rows}) == len(rows)


def test_suite_has_robust_expected_answers():
    rows = _rows("general_suite.jsonl")
    assert len(rows) >= 150
    for r in rows:
        exp = expected_of(r)
        assert exp and all(e and (isinstance(e, str) or all(isinstance(a, str) and a for a in e)) for e in exp), r
    # the demo's old 28 prompts are part of it
    demo = {json.loads(x)["messages"][0]["content"] for x in open("examples/demo/general.jsonl", encoding="utf-8")}
    assert demo <= {_question(r) for r in rows}
    # alternatives score: a numeric question accepts the word form too
    four = next(r for r in rows if _question(r) == "What is 2 + 2?")
    assert contains_all("Two plus two is four.", expected_of(four))


def test_replay_pool_never_asks_what_regression_measures():
    """Replay trains on the pool; regression measures the suite: a shared prompt (or a light
    rewording) would let replay pass the regression check by rote."""
    pool = [_words(_question(r)) for r in _rows("general_pool.jsonl")]
    for r in _rows("general_suite.jsonl"):
        q = _words(_question(r))
        worst = max(len(q & p) / len(q | p) for p in pool)
        assert worst <= 0.6, (_question(r), worst)
