"""Fixtures for the server tests: two LoRA adapters on the tiny Llama, engines, clients.

tests/deploy is a package (it has __init__.py), so this file is imported as
`deploy.conftest` and does not shadow tests/conftest.py for `from conftest import ...`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from .helpers import KEY, load_engine, make_adapter


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the tiny model is latency-bound, and the CPU is shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_adapter(tiny_model_dir, root / name, seed) for seed, name in enumerate(("a", "b"), 1)}


@pytest.fixture(scope="session")
def engine(tiny_model_dir, adapters):
    """The shared engine (base "tiny" + adapters "a", "b"); tests that pause it resume it."""
    eng = load_engine(tiny_model_dir, adapters, batch_window_ms=5)
    yield eng
    eng.close()


@pytest.fixture
def make_client(tmp_path):
    """make_client(engine, **settings) -> a started TestClient (closed after the test)."""
    from fastapi.testclient import TestClient

    from tuneforge.deploy.server.app import ServerSettings, create_app

    stack = contextlib.ExitStack()

    def make(eng, **settings):
        settings.setdefault("api_keys", (KEY,))
        settings.setdefault("request_log", str(tmp_path / "requests.db"))
        settings.setdefault("disconnect_poll_s", 0.05)
        app = create_app(eng, ServerSettings(**settings))
        return stack.enter_context(TestClient(app))

    yield make
    stack.close()
