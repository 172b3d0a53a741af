"""The generation engine alone: mixed-adapter batches, cancellation, stop sequences."""

from __future__ import annotations

import pytest

from tuneforge.deploy.server.engine import Job, QueueFull, held_back

from .helpers import wait_until


def _job(engine, model, content, max_tokens=12, **kw):
    events = []
    entry = engine.get(model)
    job = Job(
        entry, [engine.chat_prompt(entry, [{"role": "user", "content": content}])], max_tokens, events.append, **kw
    )
    job.events = events
    return job


def _run(engine, jobs):
    """Queue all jobs while the worker is paused, so they are batched together, then wait."""
    engine.pause()
    try:
        for j in jobs:
            engine.submit(j)
    finally:
        engine.resume()
    wait_until(lambda: all(any(e.kind in ("end", "error") for e in j.events) for j in jobs), "jobs to end")
    assert not [e for j in jobs for e in j.events if e.kind == "error"]
    return jobs


REQUESTS = [("a", "hello there"), ("tiny", "hi"), ("b", "what is the refund policy for orders"), ("a", "yo")]


def test_mixed_adapter_batch_gives_the_same_greedy_tokens_as_one_at_a_time(engine):
    mixed = _run(engine, [_job(engine, m, c) for m, c in REQUESTS])
    assert {j.batch_rows for j in mixed} == {len(REQUESTS)}, "all four requests shared one batch"
    for (model, content), batched in zip(REQUESTS, mixed):
        alone = _run(engine, [_job(engine, model, content)])[0]
        assert alone.batch_rows == 1
        assert batched.rows[0].tokens == alone.rows[0].tokens, (model, content)
    # and the adapters matter: the same prompt gives different tokens on base, a and b
    outs = [_run(engine, [_job(engine, m, "hello there")])[0].rows[0].tokens for m in ("tiny", "a", "b")]
    assert len({tuple(o) for o in outs}) == 3


def test_streamed_deltas_add_up_to_the_decoded_tokens(engine):
    job = _run(engine, [_job(engine, "a", "hello there", max_tokens=16)])[0]
    text = "".join(e.text for e in job.events if e.kind == "delta")
    assert text == engine.tokenizer.decode(job.rows[0].tokens, skip_special_tokens=True)
    fin = [e for e in job.events if e.kind == "finish"]
    assert [(f.finish, f.tokens) for f in fin] == [("length", 16)]


def test_stop_sequence_truncates_and_finishes_with_stop(engine):
    full = _run(engine, [_job(engine, "b", "hello there", max_tokens=16)])[0]
    text = "".join(e.text for e in full.events if e.kind == "delta")
    stop = text[4:6]
    assert len(stop) == 2 and text.find(stop) == 4
    job = _run(engine, [_job(engine, "b", "hello there", max_tokens=16, stops=[stop])])[0]
    assert "".join(e.text for e in job.events if e.kind == "delta") == text[:4]
    assert job.rows[0].finish == "stop" and len(job.rows[0].tokens) < 16


def test_held_back_keeps_possible_stop_prefixes():
    assert held_back("Hello ##", ["###"]) == 2
    assert held_back("Hello", ["###"]) == 0
    assert held_back("ab", ["b!", "ab?"]) == 2


def test_cancel_stops_a_running_generation_at_the_next_token(engine):
    steps = []

    def hook(jobs):  # the client "leaves" after the third token
        steps.append(1)
        if len(steps) == 3:
            for j in jobs:
                j.cancel()

    engine.step_hook = hook
    try:
        job = _run(engine, [_job(engine, "a", "hello there", max_tokens=64)])[0]
    finally:
        engine.step_hook = None
    assert job.rows[0].finish == "cancelled"
    assert len(job.rows[0].tokens) == 2  # generate() stopped; 62 tokens never computed
    assert len(steps) == 3


def test_a_job_cancelled_while_queued_never_runs(engine):
    job = _job(engine, "tiny", "hi")
    engine.pause()
    try:
        engine.submit(job)
        job.cancel()
    finally:
        engine.resume()
    wait_until(lambda: any(e.kind == "end" for e in job.events), "the cancelled job to end")
    assert job.started_at is None and job.rows[0].finish == "cancelled" and job.rows[0].tokens == []


def test_full_queue_refuses(tiny_model_dir):
    from .helpers import load_engine

    eng = load_engine(tiny_model_dir, max_queue=1)
    try:
        eng.pause()
        eng.submit(_job(eng, "tiny", "hi"))
        with pytest.raises(QueueFull):
            eng.submit(_job(eng, "tiny", "hi"))
        assert eng.queue_depth == 1
    finally:
        eng.resume()
        eng.close()
