"""A non-streaming client that disconnects cancels its generation (live uvicorn, raw socket).

A non-streaming response writes nothing until the end, so nothing but the server's own check
notices that the client left; the engine must stop working on the job (observed through the
step hook and the job's rows), not finish it for nobody.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlparse

import pytest

from .helpers import KEY, live_server, wait_until

pytestmark = pytest.mark.timeout(120)
MAX_TOKENS = 64


def _app(engine, tmp_path, poll_s):
    from tuneforge.deploy.server.app import ServerSettings, create_app
    from tuneforge.deploy.server.limits import Limits

    settings = ServerSettings(
        api_keys=(KEY,),
        request_log=str(tmp_path / "requests.db"),
        limits=Limits(max_tokens=MAX_TOKENS),
        disconnect_poll_s=poll_s,
    )
    return create_app(engine, settings)


def _send_and_leave(url: str, body: dict, started: threading.Event) -> None:
    """POST a non-streaming request over a raw socket and close it once generation has started."""
    u = urlparse(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {u.hostname}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        sock.sendall(head + payload)
        assert started.wait(30), "generation did not start"
    # the socket is closed here, before any byte of the response was read


def _check_cancelled(app, tmp_path, jobs):
    from tuneforge.monitor.requestlog import read_rows

    wait_until(lambda: app.state.metrics.value("tuneforge_cancelled_total", "a") == 1, "the cancellation")
    (job,) = jobs
    wait_until(lambda: all(r.done for r in job.rows), "the engine to end the job")
    assert job.cancelled and job.rows[0].finish == "cancelled"
    app.state.request_log.flush()
    row = read_rows(tmp_path / "requests.db")[0]
    assert (row["status"], row["finish_reason"], row["error_code"]) == (499, "cancelled", "client_disconnected")
    return job


def test_a_non_streaming_client_that_leaves_cancels_its_generation(engine, tmp_path):
    started, jobs, steps = threading.Event(), [], []

    def hold_until_cancelled(batch):
        # the first token waits until the server has noticed the client left: no timing involved
        steps.append(1)
        if len(steps) == 1:
            jobs.extend(batch)
            started.set()
            wait_until(lambda: all(j.cancelled for j in batch), "the server to cancel the job")

    app = _app(engine, tmp_path, poll_s=0.05)
    engine.step_hook = hold_until_cancelled
    try:
        with live_server(app) as url:
            body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}
            _send_and_leave(url, body, started)
            job = _check_cancelled(app, tmp_path, jobs)
    finally:
        engine.step_hook = None
    assert job.rows[0].tokens == [] and len(steps) == 1  # generate() ended at the step the cancel came in


def test_a_client_that_leaves_while_tokens_flow_is_noticed(engine, tmp_path):
    """Tokens arrive far more often than the disconnect poll: the check must not wait for a quiet moment."""
    started, jobs = threading.Event(), []
    poll_s, step_s = 0.5, 0.05  # one step every 50 ms: ~3 s for all the tokens, an event every step

    def paced(batch):
        if not jobs:
            jobs.extend(batch)
            started.set()
        deadline = time.monotonic() + step_s
        while time.monotonic() < deadline and not all(j.cancelled for j in batch):
            time.sleep(0.005)

    app = _app(engine, tmp_path, poll_s=poll_s)
    engine.step_hook = paced
    try:
        with live_server(app) as url:
            body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}
            _send_and_leave(url, body, started)
            job = _check_cancelled(app, tmp_path, jobs)
    finally:
        engine.step_hook = None
    print(f"cancelled after {len(job.rows[0].tokens)} of {MAX_TOKENS} tokens")
    assert len(job.rows[0].tokens) < MAX_TOKENS // 2
