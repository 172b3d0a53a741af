"""Stop sequences: the per-token scan is bounded by the stops' length, not the text's.

The scan runs inside `generate` (a stopping criterion ends the row), so under the model lock;
what keeps it cheap is that each step looks only at what is new plus one stop length, and
that the hold-back check is linear in the stop length (and the server caps both).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tuneforge.deploy.server.engine import held_back

from .test_engine import _job, _run


def naive_held_back(text: str, stops: list[str]) -> int:
    return max([k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])], default=0)


@settings(max_examples=300, deadline=None)
@given(st.text("ab#", max_size=12), st.lists(st.text("ab#", min_size=1, max_size=6), max_size=4))
def test_held_back_is_the_longest_stop_prefix_at_the_end(text, stops):
    assert held_back(text, stops) == naive_held_back(text, stops)


class CountingStr(str):
    """A str that counts the characters read through slicing and indexing it."""

    read = 0

    def __getitem__(self, key):
        out = super().__getitem__(key)
        CountingStr.read += len(out)
        return out


def test_held_back_reads_each_stop_a_bounded_number_of_times():
    n = 4000
    # the worst case for prefix-by-prefix matching: a long run of one character, then a mismatch
    for text, stop in (("a" * n, "a" * (n - 1) + "b"), ("b" * n, "a" * n), ("xa" * n, "a" * n)):
        CountingStr.read = 0
        expected = naive_held_back(text, [stop])
        assert held_back(text, [CountingStr(stop)]) == expected
        assert CountingStr.read <= 10 * len(stop), (CountingStr.read, len(stop))  # quadratic: ~ n² / 2


class FindSpy(str):
    starts: list = []

    def find(self, sub, start=0, *rest):
        FindSpy.starts.append((len(self), start))
        return super().find(sub, start, *rest)


def test_each_step_searches_only_the_new_text_for_stops(engine, monkeypatch):
    real = engine._decode
    monkeypatch.setattr(engine, "_decode", lambda row: FindSpy(real(row)))
    FindSpy.starts = []
    stop = "\x00z"  # never generated: every step searches
    job = _run(engine, [_job(engine, "a", "hello there", max_tokens=64, stops=[stop])])[0]
    text = "".join(e.text for e in job.events if e.kind == "delta")
    assert len(FindSpy.starts) >= 60 and len(text) > 60
    scanned = sum(length - start for length, start in FindSpy.starts)
    # each step: the new characters plus one stop length (a rescan of the text from 0 is quadratic)
    assert scanned <= len(text) + 2 * len(stop) * len(FindSpy.starts), (scanned, len(text))
