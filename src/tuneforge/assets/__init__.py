"""Data files shipped in the package (offline by design: nothing is fetched from a hub).

- `general_pool.jsonl`: general instructions (no domain) whose base-model answers are replayed
  into SFT training against forgetting (`data.replay`).
- `general_suite.jsonl`: general prompts with expected answers, the default regression suite
  (`evaluation.regression_suite`). The two files share no prompt (tests/test_assets.py), so
  replay never trains on what regression measures.
- `pii_words.txt`: the word lists of the person-name heuristic (`data.pii_persons`): given names and
  surnames across many languages, ordinary words, organisation words, places and brands.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent


def asset(name: str) -> Path:
    """Path of a shipped data file.

    >>> asset("general_suite.jsonl").name
    'general_suite.jsonl'
    """
    return ASSETS / name
