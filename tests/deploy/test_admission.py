"""Admission: /v1/completions has the limits chat has, and a refusal (4xx, 429) costs no tokenising.

Oversize anything gets a 4xx in OpenAI's error shape, never a 500; limits and queue room are
checked before a prompt is templated or tokenised, and tokenising runs off the event loop.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from tuneforge.deploy.server.limits import Limits

from .helpers import AUTH, chat_body, load_engine, wait_until
from .test_server import assert_openai_error

CHAT, COMPL = "/v1/chat/completions", "/v1/completions"
LIMITS = Limits(max_tokens=32, max_prompt_tokens=40, max_n=4, max_prompts=3, max_stop_chars=16, max_body_bytes=4000)


def compl(prompt="once upon", **kw) -> dict:
    return {"model": "tiny", "prompt": prompt, "max_tokens": 4, **kw}


OVERSIZE_COMPLETIONS = [
    (compl(max_tokens=33), 400, "max_tokens_too_large", "max_tokens"),
    (compl(max_tokens=0), 400, "invalid_request", "max_tokens"),
    (compl(n=5), 400, "n_too_large", "n"),
    (compl(["a", "b"], n=3), 400, "n_too_large", "n"),  # n × prompts
    (compl(["a"] * 4), 400, "too_many_prompts", "prompt"),
    (compl("word " * 60), 400, "prompt_too_long", "prompt"),
    (compl(["hi", "word " * 60]), 400, "prompt_too_long", "prompt"),
    (compl(stop=["a", "b", "c", "d", "e"]), 400, "too_many_stop_sequences", "stop"),
    (compl(stop=["x" * 17]), 400, "stop_too_long", "stop"),
    (compl(stop="x" * 17), 400, "stop_too_long", "stop"),
    (compl(stop=[""]), 400, "invalid_request", "stop"),
    (compl("x" * 5000), 413, "request_too_large", None),
    (compl(model="nope"), 404, "model_not_found", "model"),
    (compl([]), 400, None, "prompt"),
    (compl([1, 2]), 400, "invalid_request", "prompt"),
    ({"model": "tiny"}, 400, "invalid_request", "prompt"),
    (compl(temperature=5), 400, "invalid_request", "temperature"),
    (compl(echo=True), 400, "unsupported_parameter", "echo"),
    (compl(best_of=2), 400, "unsupported_parameter", "best_of"),
    (compl(logprobs=2), 400, "unsupported_parameter", "logprobs"),
]


@pytest.mark.parametrize("body,status,code,param", OVERSIZE_COMPLETIONS)
def test_completions_limits_answer_4xx_in_openai_shape(engine, make_client, body, status, code, param):
    c = make_client(engine, limits=LIMITS)
    err = assert_openai_error(c.post(COMPL, headers=AUTH, json=body), status, code)
    assert err["param"] == param


@pytest.mark.parametrize(
    "body,code",
    [
        (chat_body(stop=["x" * 17]), "stop_too_long"),
        (chat_body(stop=["a"] * 5), "too_many_stop_sequences"),
        (chat_body(max_tokens=33, n=5, stop=["x" * 17] * 5), "n_too_large"),  # everything oversize at once
    ],
)
def test_chat_stop_limits(engine, make_client, body, code):
    c = make_client(engine, limits=LIMITS)
    assert_openai_error(c.post(CHAT, headers=AUTH, json=body), 400, code)


def test_context_length_exceeded_is_a_400(engine, make_client):
    c = make_client(engine, limits=Limits(max_tokens=500, max_prompt_tokens=500))
    r = c.post(COMPL, headers=AUTH, json=compl("word " * 100, max_tokens=500))
    assert assert_openai_error(r, 400, "context_length_exceeded")["param"] == "prompt"


@pytest.fixture
def tokenised(engine, monkeypatch):
    """Every prompt the server templates or tokenises, with whether that ran on the event loop."""
    calls = []

    def on_loop() -> bool:
        try:
            asyncio.get_running_loop()
            return True
        except RuntimeError:
            return False

    def spy(name):
        real = getattr(engine, name)

        def wrapper(*args):
            calls.append((name, on_loop()))
            return real(*args)

        monkeypatch.setattr(engine, name, wrapper)

    spy("chat_prompt")
    spy("text_prompt")
    return calls


def test_a_huge_prompt_list_is_refused_before_any_prompt_is_tokenised(engine, make_client, tokenised):
    # 250 k prompts in a body the server accepts (its byte limit raised): refused by their count
    c = make_client(engine, limits=Limits(max_body_bytes=4 << 20))
    err = assert_openai_error(c.post(COMPL, headers=AUTH, json=compl(["hi"] * 250_000)), 400, "too_many_prompts")
    assert err["param"] == "prompt" and "250000" in err["message"]
    assert_openai_error(c.post(COMPL, headers=AUTH, json=compl(["hi"] * 5, n=1)), 400, "n_too_large")
    assert_openai_error(c.post(CHAT, headers=AUTH, json=chat_body(max_tokens=10_000)), 400, "max_tokens_too_large")
    assert tokenised == []


def test_tokenising_runs_off_the_event_loop(engine, make_client, tokenised):
    c = make_client(engine)
    assert c.post(CHAT, headers=AUTH, json=chat_body("a")).status_code == 200
    assert c.post(COMPL, headers=AUTH, json=compl(["hi", "yo"])).status_code == 200
    assert tokenised == [("chat_prompt", False), ("text_prompt", False), ("text_prompt", False)]


def test_a_429_costs_no_tokenising(tiny_model_dir, make_client, monkeypatch):
    eng = load_engine(tiny_model_dir, max_queue=1)
    calls = []
    for name in ("chat_prompt", "text_prompt"):
        real = getattr(eng, name)
        monkeypatch.setattr(eng, name, lambda *a, _real=real, _n=name: calls.append(_n) or _real(*a))
    try:
        c = make_client(eng)
        eng.pause()  # the worker takes nothing: the first request fills the queue deterministically
        first = {}
        t = threading.Thread(target=lambda: first.setdefault("r", c.post(CHAT, headers=AUTH, json=chat_body())))
        t.start()
        wait_until(lambda: eng.queue_depth == 1, "the first request to be queued")
        assert calls == ["chat_prompt"]
        for path, body in ((CHAT, chat_body()), (COMPL, compl(["a", "b"]))):
            r = c.post(path, headers=AUTH, json=body)
            assert_openai_error(r, 429, "rate_limit_exceeded")
            assert r.headers["retry-after"] == "1"
        assert calls == ["chat_prompt"], "the refused requests were not tokenised"
        eng.resume()
        t.join(30)
        assert first["r"].status_code == 200
    finally:
        eng.resume()
        eng.close()
