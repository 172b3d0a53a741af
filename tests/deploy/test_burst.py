"""A real 10× burst over loopback against a live uvicorn: the server sheds what it cannot queue.

40 concurrent clients hit a server whose queue holds 4. The first batch is held (step hook)
until every request of the wave has been queued or refused, so the excess is certain whatever
the speed of the machine; then it runs. Checked: the queue never grows past its bound, the
excess gets 429 + Retry-After in OpenAI's error shape, /health answers throughout, every
admitted request completes, and the process's memory stays bounded. The latency of admitted
requests is reported (p50/p99), not asserted.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .helpers import AUTH, KEY, live_server, load_engine, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]
MAX_QUEUE, CLIENTS, WAVES, MAX_BATCH = 4, 40, 3, 4
RSS_MARGIN = 300 << 20  # generous: a leak per request would show as far more over 120 requests


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _body(i: int) -> tuple[str, dict]:
    model = ("tiny", "a", "b")[i % 3]
    if i % 2:
        return "/v1/completions", {"model": model, "prompt": f"once upon {i}", "max_tokens": 8}
    return "/v1/chat/completions", {
        "model": model,
        "messages": [{"role": "user", "content": f"hi {i}"}],
        "max_tokens": 8,
    }


def test_a_10x_burst_is_shed_with_429_and_the_server_stays_healthy(tiny_model_dir, adapters, tmp_path):
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("reads the process's memory from /proc (Linux)")
    httpx = pytest.importorskip("httpx")
    from tuneforge.deploy.server.app import ServerSettings, create_app

    eng = load_engine(tiny_model_dir, adapters, max_queue=MAX_QUEUE, max_batch_size=MAX_BATCH, batch_window_ms=5)
    app = create_app(
        eng, ServerSettings(api_keys=(KEY,), request_log=str(tmp_path / "requests.db"), disconnect_poll_s=0.05)
    )
    rejected = lambda: sum(app.state.metrics.value("tuneforge_queue_rejected_total", m) for m in ("tiny", "a", "b"))  # noqa: E731
    gate = {"wave_rejected": 0.0, "held": 0}

    def hold_first_batch(jobs):
        # once per wave: wait until every request of the wave is queued, in this batch, or refused
        if gate["held"] < gate.get("wave", 0):
            gate["held"] += 1
            wait_until(
                lambda: rejected() - gate["wave_rejected"] + eng.queue_depth + len(jobs) >= CLIENTS,
                "every request of the wave to be queued or refused",
            )

    eng.step_hook = hold_first_batch
    depths, health, stop = [], [], threading.Event()
    try:
        with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:

            def watch():  # /health and the queue depth, all through the burst
                with httpx.Client(base_url=url, timeout=10) as h:
                    while not stop.is_set():
                        t0 = time.monotonic()
                        r = h.get("/health")
                        health.append((r.status_code, time.monotonic() - t0, r.json()["queue_depth"]))
                        depths.append(eng.queue_depth)
                        time.sleep(0.01)

            def call(i: int, barrier: threading.Barrier):
                path, body = _body(i)
                barrier.wait(30)
                t0 = time.monotonic()
                r = client.post(path, json=body, headers=AUTH)
                return r, time.monotonic() - t0

            client.post("/v1/completions", json=_body(1)[1], headers=AUTH).raise_for_status()  # warm up
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            rss0, results = _rss(), []
            with ThreadPoolExecutor(CLIENTS) as pool:
                for wave in range(WAVES):
                    gate["wave"], gate["wave_rejected"] = wave + 1, rejected()
                    barrier = threading.Barrier(CLIENTS)
                    results += list(pool.map(lambda i, b=barrier: call(i, b), range(CLIENTS)))
            rss1 = _rss()
            stop.set()
            watcher.join(10)
            final = client.post("/v1/chat/completions", json=_body(0)[1], headers=AUTH)
    finally:
        stop.set()
        eng.step_hook = None
        eng.close()

    statuses = [r.status_code for r, _ in results]
    ok = sorted(dt for r, dt in results if r.status_code == 200)
    shed = [r for r, _ in results if r.status_code == 429]
    p = lambda q: ok[min(len(ok) - 1, int(q * len(ok)))]  # noqa: E731
    print(
        f"\nburst: {WAVES} waves × {CLIENTS} clients, queue {MAX_QUEUE}: {len(ok)} admitted, {len(shed)} × 429; "
        f"admitted latency p50 {p(0.5) * 1000:.0f} ms, p99 {p(0.99) * 1000:.0f} ms; "
        f"/health {len(health)} answers, slowest {max(h[1] for h in health) * 1000:.0f} ms; "
        f"max queue depth {max(depths)}; RSS {rss0 >> 20} → {rss1 >> 20} MiB"
    )
    assert set(statuses) <= {200, 429}, [r.text for r, _ in results if r.status_code not in (200, 429)][:3]
    # each wave: the held batch plus a full queue got in; everything else was shed
    assert WAVES * (1 + MAX_QUEUE) <= len(ok) <= WAVES * (MAX_BATCH + MAX_QUEUE)
    assert len(shed) == WAVES * CLIENTS - len(ok) and rejected() == len(shed)
    for r in shed:
        assert r.headers["retry-after"] == "1"
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["code"] == "rate_limit_exceeded"
    assert max(depths) <= MAX_QUEUE and max(h[2] for h in health) <= MAX_QUEUE
    assert len(health) >= 3 and all(h[0] == 200 for h in health), "/health answered throughout"
    assert all(r.json()["usage"]["completion_tokens"] <= 8 for r, _ in results if r.status_code == 200)
    assert rss1 - rss0 < RSS_MARGIN
    assert final.status_code == 200, "the server recovers after the burst"
