"""Property-based fuzzing of the loader: any bytes in, never a crash, never an empty sample."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneforge.data.validate import load_validated

GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "wizard", "", None])
TEXT = st.one_of(st.text(max_size=12), st.none(), st.integers(), st.just("   "), st.just("\ud800"))
MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {"role": ROLES, "content": TEXT},
        optional={"weight": st.sampled_from([0, 1, 2, True, "1"]), "extra": st.integers()},
    ),
    st.text(max_size=5),
    st.integers(),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)
KEYS = [
    "messages",
    "conversations",
    "prompt",
    "completion",
    "chosen",
    "rejected",
    "label",
    "text",
    "instruction",
    "output",
    "input",
    "preferred_output",
    "non_preferred_output",
]
ROW = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=4)}),
    st.dictionaries(st.sampled_from(KEYS), st.one_of(TEXT, JSON, st.lists(MESSAGE, max_size=3)), max_size=4),
    JSON,
)
LINE = st.one_of(
    ROW.map(lambda r: json.dumps(r).encode()),
    st.binary(max_size=40),
    st.just(b"\xef\xbb\xbf" + json.dumps(GOOD).encode()),
    st.just(json.dumps(GOOD).encode() + b"\r"),
)


def _check(path: Path, suffix: str) -> None:
    for fmt in ("auto", "messages", "preference", "kto", "text"):
        data = load_validated(path, fmt)
        for r in data.rows:
            assert r["messages"], r
            assert any(m["role"] == "assistant" for m in r["messages"])
            assert all(isinstance(m["content"], str) for m in r["messages"])
            assert all(m["content"].strip() for m in r["messages"] if m["role"] == "assistant" and m.get("weight", 1))
        for p in data.problems:
            assert p.line >= 1 and p.code


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINE, max_size=8))
def test_jsonl_never_crashes_nor_yields_empty_samples(lines):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.jsonl"
        p.write_bytes(b"\n".join(lines))
        _check(p, ".jsonl")


@settings(max_examples=60, deadline=None)
@given(st.lists(ROW, max_size=6))
def test_json_array_never_crashes(rows):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.json"
        p.write_text(json.dumps(rows))
        _check(p, ".json")
