"""The docstring examples of the evaluate package are true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "text_metrics",
    "metrics",
    "safety",
    "suites",
    "gates",
    "plots",
    "report",
    "compare",
    "review",
    "review_page",
    "judge",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(f"tuneforge.evaluate.{name}")
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0 and (res.attempted > 0 or name == "runner")
