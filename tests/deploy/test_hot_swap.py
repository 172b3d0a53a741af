"""Registry hot swap (`Engine.replace_adapter`) while requests are in flight.

A batch is gathered under the queue lock and run under the model lock, and a request looks its
model up before it templates, tokenises and submits: a swap can fall into either gap. The job
must then run on the version it was gathered (or rendered) for — never lose its adapter and
fail with a 500. The interleavings are forced with hooks, not timing.
"""

from __future__ import annotations

import threading

import pytest

from .helpers import AUTH, chat_body, load_engine, wait_until
from .test_engine import _job


@pytest.fixture
def swap_engine(tiny_model_dir, adapters):
    """An engine of its own serving adapter "a"'s weights as "x" (the tests swap "x" to "b")."""
    eng = load_engine(tiny_model_dir, {"x": adapters["a"]}, batch_window_ms=0)
    yield eng
    eng.close()


def _one(eng, model="x", content="hello there"):
    job = _job(eng, model, content)
    eng.submit(job)
    wait_until(lambda: any(e.kind in ("end", "error") for e in job.events), "the job to end")
    return job


def _in_thread(fn):
    """Run fn on a thread of its own (as the registry follower does) and wait for it."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(60)
    assert out, "the swap did not finish"
    return out[0]


def test_a_job_gathered_before_a_swap_runs_on_the_version_it_was_gathered_with(swap_engine, adapters):
    eng = swap_engine
    version_a = _one(eng).rows[0].tokens
    swaps = []

    def swap_between_gather_and_run(jobs):
        # the worker has taken the job out of the queue and not yet the model lock
        if not swaps:
            swaps.append(_in_thread(lambda: eng.replace_adapter("x", adapters["b"])))

    eng.batch_hook = swap_between_gather_and_run
    try:
        job = _one(eng)
    finally:
        eng.batch_hook = None
    assert swaps, "the swap ran while the job was gathered"
    assert [e.text for e in job.events if e.kind == "error"] == []
    assert job.rows[0].tokens == version_a and job.rows[0].finish in ("stop", "length")
    old = job.entry
    assert eng.get("x") is swaps[0] and old is not swaps[0]
    # the next request gets the new version; the old one is unloaded once its batch is done
    assert _one(eng).rows[0].tokens != version_a
    wait_until(lambda: old.removed, "the retired version to be unloaded")
    assert old.internal not in eng.model.peft_config and swaps[0].internal in eng.model.peft_config


def test_a_request_tokenising_during_a_swap_runs_on_the_version_it_was_rendered_for(
    swap_engine, adapters, make_client, monkeypatch
):
    eng = swap_engine
    c = make_client(eng)
    before = c.post("/v1/chat/completions", headers=AUTH, json=chat_body("x")).json()["choices"]
    real = eng.chat_prompt
    swaps = []

    def swap_while_tokenising(entry, messages):  # runs off the event loop, after the model lookup
        if not swaps:
            swaps.append(eng.replace_adapter("x", adapters["b"]))
        return real(entry, messages)

    monkeypatch.setattr(eng, "chat_prompt", swap_while_tokenising)
    r = c.post("/v1/chat/completions", headers=AUTH, json=chat_body("x"))
    assert swaps and r.status_code == 200, r.text
    assert r.json()["choices"] == before
    after = c.post("/v1/chat/completions", headers=AUTH, json=chat_body("x")).json()["choices"]
    assert after != before
