"""The HTTP API (FastAPI TestClient): auth, shapes, streaming, limits, 429, admin, log, metrics."""

from __future__ import annotations

import json
import os
import threading

import pytest

from .helpers import AUTH, chat_body, load_engine, sse_events, wait_until

CHAT, COMPL = "/v1/chat/completions", "/v1/completions"


def assert_openai_error(r, status, code=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["code"] is None or isinstance(err["code"], str)
    if code is not None:
        assert err["code"] == code, err
    return err


ROUTES = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/tiny", None),
    ("POST", CHAT, chat_body()),
    ("POST", COMPL, {"model": "tiny", "prompt": "hi"}),
    ("GET", "/metrics", None),
    ("GET", "/admin/adapters", None),
    ("POST", "/admin/adapters", {"name": "x", "path": "x"}),
    ("DELETE", "/admin/adapters/a", None),
]


@pytest.mark.parametrize("method,path,body", ROUTES)
def test_every_route_but_health_needs_a_key(engine, make_client, method, path, body):
    c = make_client(engine, api_keys=("k1", "k2"))
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic k1"}):
        assert_openai_error(c.request(method, path, json=body, headers=headers), 401, "invalid_api_key")
    ok = c.request(method, path, json=body, headers={"Authorization": "Bearer k2"})
    assert ok.status_code != 401
    assert c.get("/health").json()["status"] == "ok"


def test_models_lists_base_and_adapters(engine, make_client):
    c = make_client(engine)
    data = c.get("/v1/models", headers=AUTH).json()
    assert data["object"] == "list"
    assert {m["id"]: m["parent"] for m in data["data"]} == {"tiny": None, "a": "tiny", "b": "tiny"}
    assert c.get("/v1/models/a", headers=AUTH).json()["id"] == "a"
    assert_openai_error(c.get("/v1/models/zzz", headers=AUTH), 404, "model_not_found")


def test_chat_non_stream_and_stream_agree(engine, make_client):
    c = make_client(engine)
    r = c.post(CHAT, headers=AUTH, json=chat_body("a"))
    assert r.status_code == 200 and r.headers["x-request-id"] == r.json()["id"]
    out = r.json()
    assert out["object"] == "chat.completion" and out["model"] == "a"
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    assert out["usage"]["completion_tokens"] <= 8 and out["usage"]["prompt_tokens"] > 0
    assert c.post(CHAT, headers=AUTH, json=chat_body("a")).json()["choices"] == out["choices"], "greedy by default"

    s = c.post(CHAT, headers=AUTH, json=chat_body("a", stream=True, stream_options={"include_usage": True}))
    assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
    events = sse_events(s.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(e["object"] == "chat.completion.chunk" and e["id"] == chunks[0]["id"] for e in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in chunks if e["choices"])
    assert text == choice["message"]["content"]
    assert [e["choices"][0]["finish_reason"] for e in chunks if e["choices"]][-1] == choice["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == out["usage"]


def test_completions_with_prompt_list_and_n(engine, make_client):
    c = make_client(engine)
    out = c.post(
        COMPL, headers=AUTH, json={"model": "b", "prompt": ["hi", "once upon"], "n": 2, "max_tokens": 4}
    ).json()
    assert out["object"] == "text_completion" and [ch["index"] for ch in out["choices"]] == [0, 1, 2, 3]
    assert out["choices"][0]["text"] == out["choices"][1]["text"]  # greedy: n copies agree
    assert out["usage"]["completion_tokens"] <= 16
    s = c.post(COMPL, headers=AUTH, json={"model": "b", "prompt": "hi", "max_tokens": 4, "stream": True})
    events = sse_events(s.text)
    assert events[-1] == "[DONE]" and all(e["object"] == "text_completion" for e in events[:-1])
    single = c.post(COMPL, headers=AUTH, json={"model": "b", "prompt": "hi", "max_tokens": 4}).json()
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == single["choices"][0]["text"]


def test_sampling_with_a_seed_is_reproducible(engine, make_client):
    c = make_client(engine)
    body = chat_body("a", temperature=1.5, top_p=0.95, seed=7, max_tokens=12)
    first = c.post(CHAT, headers=AUTH, json=body).json()["choices"]
    assert c.post(CHAT, headers=AUTH, json=body).json()["choices"] == first


LIMITS = {"max_tokens": 32, "max_prompt_tokens": 40, "max_n": 2, "max_body_bytes": 2000}
BAD = [
    (chat_body(max_tokens=33), 400, "max_tokens_too_large", "max_tokens"),
    (chat_body(n=3), 400, "n_too_large", "n"),
    (chat_body(content="word " * 60), 400, "prompt_too_long", "messages"),
    (chat_body(stop=["a", "b", "c", "d", "e"]), 400, "too_many_stop_sequences", "stop"),
    (chat_body(content="x" * 3000), 413, "request_too_large", None),
    (chat_body(model="nope"), 404, "model_not_found", "model"),
    ({"model": "tiny"}, 400, "invalid_request", "messages"),
    (chat_body(temperature=5), 400, "invalid_request", "temperature"),
    (chat_body(tools=[{"type": "function"}]), 400, "unsupported_parameter", "tools"),
    (
        chat_body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
        400,
        "unsupported_content",
        "messages",
    ),
]


@pytest.mark.parametrize("body,status,code,param", BAD)
def test_limits_and_errors_use_openai_error_shape(engine, make_client, body, status, code, param):
    c = make_client(engine, limits=__import__("tuneforge.deploy.server.limits", fromlist=["Limits"]).Limits(**LIMITS))
    err = assert_openai_error(c.post(CHAT, headers=AUTH, json=body), status, code)
    assert err["param"] == param


def test_malformed_json_and_unknown_route(engine, make_client):
    c = make_client(engine)
    r = c.post(CHAT, headers={**AUTH, "content-type": "application/json"}, content=b"{not json")
    assert_openai_error(r, 400, "invalid_request")
    assert_openai_error(c.get("/v2/nothing", headers=AUTH), 404)


def test_full_queue_gives_429_and_the_server_recovers(tiny_model_dir, make_client):
    eng = load_engine(tiny_model_dir, max_queue=1)
    try:
        c = make_client(eng)
        eng.pause()  # the worker takes nothing: the first request fills the queue deterministically
        first = {}
        t = threading.Thread(target=lambda: first.setdefault("r", c.post(CHAT, headers=AUTH, json=chat_body())))
        t.start()
        wait_until(lambda: eng.queue_depth == 1, "the first request to be queued")
        r = c.post(CHAT, headers=AUTH, json=chat_body())
        assert_openai_error(r, 429, "rate_limit_exceeded")
        assert r.headers["retry-after"] == "1"
        assert c.get("/health").status_code == 200
        eng.resume()
        t.join(30)
        assert first["r"].status_code == 200
        assert c.post(CHAT, headers=AUTH, json=chat_body()).status_code == 200
        m = c.get("/metrics", headers=AUTH).text
        assert 'tuneforge_queue_rejected_total{model="tiny"} 1' in m
        assert 'tuneforge_requests_total{route="/v1/chat/completions",model="tiny",status="429"} 1' in m
    finally:
        eng.resume()
        eng.close()


def test_concurrent_requests_for_different_adapters_batch_and_match_sequential(engine, make_client):
    c = make_client(engine)
    bodies = [chat_body(m, content=t) for m, t in (("a", "hi"), ("tiny", "hello there"), ("b", "good day"))]
    sequential = [c.post(CHAT, headers=AUTH, json=b).json()["choices"] for b in bodies]
    results = [None] * len(bodies)

    def send(i):
        results[i] = c.post(CHAT, headers=AUTH, json=bodies[i]).json()["choices"]

    engine.pause()
    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: engine.queue_depth == len(bodies), "all requests to be queued")
    finally:
        engine.resume()
    for t in threads:
        t.join(30)
    assert results == sequential
    # replies go out as rows finish; the batch itself is recorded once generate() returns
    wait_until(lambda: "tuneforge_batch_size_count 4" in c.get("/metrics", headers=AUTH).text, "the batch metric")
    assert 'tuneforge_batch_size_bucket{le="2"} 3' in c.get("/metrics", headers=AUTH).text  # 3 alone, 1 of 3


def test_admin_route_is_off_by_default(engine, make_client, adapters):
    c = make_client(engine)
    r = c.post("/admin/adapters", headers=AUTH, json={"name": "x", "path": str(adapters["a"])})
    assert_openai_error(r, 403, "admin_disabled")


def test_admin_hot_loads_only_under_the_allowed_dir(tiny_model_dir, make_client, tmp_path):
    from .helpers import make_adapter

    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    make_adapter(tiny_model_dir, allowed / "good", seed=3)
    make_adapter(tiny_model_dir, outside / "evil", seed=4)
    os.symlink(outside / "evil", allowed / "link")
    (allowed / "sneaky").mkdir()
    for f in (outside / "evil").iterdir():  # a real folder whose weights are symlinks out
        os.symlink(f, allowed / "sneaky" / f.name)
    eng = load_engine(tiny_model_dir)  # no adapters yet: the first hot-load wraps the base in PEFT
    try:
        c = make_client(eng, admin_dir=str(allowed))
        for path in ("../outside/evil", str(outside / "evil"), "link", "sneaky", "good/../../outside/evil"):
            r = c.post("/admin/adapters", headers=AUTH, json={"name": "x", "path": path})
            assert_openai_error(r, 403, "path_not_allowed")
        assert_openai_error(c.post("/admin/adapters", headers=AUTH, json={"name": "x", "path": "missing"}), 400)
        before = c.post(CHAT, headers=AUTH, json=chat_body("tiny")).json()["choices"]
        r = c.post("/admin/adapters", headers=AUTH, json={"name": "good", "path": "good"})
        assert r.status_code == 201 and r.json()["id"] == "good"
        assert_openai_error(c.post("/admin/adapters", headers=AUTH, json={"name": "good", "path": "good"}), 409)
        assert "good" in [m["id"] for m in c.get("/v1/models", headers=AUTH).json()["data"]]
        tuned = c.post(CHAT, headers=AUTH, json=chat_body("good")).json()["choices"]
        assert tuned != before
        assert c.post(CHAT, headers=AUTH, json=chat_body("tiny")).json()["choices"] == before
        assert c.delete("/admin/adapters/good", headers=AUTH).json()["deleted"] is True
        assert_openai_error(c.post(CHAT, headers=AUTH, json=chat_body("good")), 404, "model_not_found")
    finally:
        eng.close()


def test_every_request_is_logged_and_log_failures_never_fail_requests(engine, make_client, tmp_path, monkeypatch):
    from tuneforge.monitor.requestlog import RequestLog, read_rows

    c = make_client(engine, log_content=True)
    c.post(CHAT, headers=AUTH, json=chat_body("a", user="u1"))
    c.post(COMPL, headers=AUTH, json={"model": "tiny", "prompt": "hi", "max_tokens": 3, "stream": True})
    c.post(CHAT, headers=AUTH, json=chat_body("nope"))
    c.post(CHAT, headers=AUTH, json={"model": "a"})
    c.app.state.request_log.flush()
    rows = read_rows(tmp_path / "requests.db")[::-1]
    assert [(r["route"], r["model"], r["adapter"], r["status"], r["stream"]) for r in rows] == [
        (CHAT, "a", "a", 200, 0),
        (COMPL, "tiny", None, 200, 1),
        (CHAT, "nope", None, 404, 0),
        (CHAT, "a", None, 400, 0),
    ]
    ok = rows[0]
    assert ok["request_id"].startswith("chatcmpl-") and ok["user"] == "u1" and ok["finish_reason"] == "length"
    assert ok["prompt_tokens"] > 0 and ok["completion_tokens"] == 8 and ok["latency_ms"] >= ok["queue_ms"] >= 0
    assert json.loads(ok["prompt"])[0]["content"] == "hello there" and len(json.loads(ok["completion"])) == 1
    assert rows[2]["error_code"] == "model_not_found"

    def broken(self, conn, rows):
        raise OSError("disk full")

    monkeypatch.setattr(RequestLog, "_insert", broken)
    assert c.post(CHAT, headers=AUTH, json=chat_body("a")).status_code == 200
    c.app.state.request_log.flush()
    assert "tuneforge_request_log_errors_total 1" in c.get("/metrics", headers=AUTH).text


def test_request_log_uses_wal_and_records_its_schema_version(engine, make_client, tmp_path):
    import sqlite3

    make_client(engine)
    conn = sqlite3.connect(tmp_path / "requests.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2  # v2: + feedback table (stage 7)
    conn.close()


def test_metrics_expose_counters_latency_tokens_and_queue_depth(engine, make_client):
    c = make_client(engine)
    c.post(CHAT, headers=AUTH, json=chat_body("b"))
    text = c.get("/metrics", headers=AUTH).text
    assert c.get("/metrics", headers=AUTH).headers["content-type"].startswith("text/plain")
    for line in (
        'tuneforge_requests_total{route="/v1/chat/completions",model="b",status="200"} 1',
        'tuneforge_completion_tokens_total{model="b"} 8',
        "tuneforge_queue_depth 0",
        "tuneforge_adapters_loaded 2",
        "# TYPE tuneforge_request_latency_seconds histogram",
        'tuneforge_request_latency_seconds_count{route="/v1/chat/completions",model="b"} 1',
    ):
        assert line in text, line
    assert 'tuneforge_tokens_per_second{model="b"}' in text
