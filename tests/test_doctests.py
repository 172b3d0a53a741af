"""Every docstring example in the package is true: each module's doctests run here (in `make test`).

Examples that need a model or a file are written as comments (`>>> # model = ...`), so each
module imports on the dev install without side effects and its examples run as they are.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tuneforge

MODULES = sorted(m.name for m in pkgutil.walk_packages(tuneforge.__path__, "tuneforge."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False)
    assert res.failed == 0, f"{name}: {res.failed} of {res.attempted} docstring example(s) failed (output above)"


def test_the_examples_are_many():
    """A guard against a collection that silently finds no example at all."""
    attempted = sum(
        doctest.testmod(importlib.import_module(n), optionflags=doctest.ELLIPSIS, report=False).attempted
        for n in MODULES
    )
    assert attempted >= 100, attempted
