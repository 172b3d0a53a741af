"""A live uvicorn server on loopback: the official openai client, and client disconnects."""

from __future__ import annotations

import pytest

from .helpers import KEY, live_server, wait_until

pytestmark = pytest.mark.timeout(120)


def _app(engine, tmp_path, **kw):
    from tuneforge.deploy.server.app import ServerSettings, create_app
    from tuneforge.deploy.server.limits import Limits

    return create_app(
        engine,
        ServerSettings(
            api_keys=(KEY,),
            request_log=str(tmp_path / "requests.db"),
            limits=Limits(max_tokens=64),
            disconnect_poll_s=0.05,
            **kw,
        ),
    )


def test_official_openai_client(engine, tmp_path):
    openai = pytest.importorskip("openai")
    with live_server(_app(engine, tmp_path)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert {m.id for m in client.models.list()} == {"tiny", "a", "b"}

        msgs = [{"role": "user", "content": "hello there"}]
        out = client.chat.completions.create(model="a", messages=msgs, max_tokens=8)
        assert out.choices[0].message.role == "assistant" and out.usage.completion_tokens <= 8
        stream = client.chat.completions.create(model="a", messages=msgs, max_tokens=8, stream=True)
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert text == out.choices[0].message.content

        comp = client.completions.create(model="b", prompt="once upon", max_tokens=4)
        assert comp.choices[0].finish_reason in ("stop", "length")

        with pytest.raises(openai.NotFoundError) as e:
            client.chat.completions.create(model="nope", messages=msgs)
        assert e.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="a", messages=msgs, max_tokens=65)
        assert e.value.code == "max_tokens_too_large" and e.value.param == "max_tokens"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()


def test_a_client_that_disconnects_cancels_its_generation(engine, tmp_path):
    import httpx

    from tuneforge.monitor.requestlog import read_rows

    seen = []

    def hold_until_cancelled(jobs):
        # the worker waits at its first token until the server has noticed the client left,
        # so the test does not depend on how fast the tiny model generates
        seen.append(1)
        if len(seen) == 1:
            wait_until(lambda: all(j.cancelled for j in jobs), "the server to cancel the job")

    app = _app(engine, tmp_path)
    engine.step_hook = hold_until_cancelled
    try:
        with live_server(app) as url:
            body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64, "stream": True}
            with httpx.Client() as http:
                with http.stream(
                    "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
                ) as r:
                    first = next(r.iter_lines())
                    assert first.startswith("data: ") and '"role": "assistant"' in first
                # leaving the block closes the connection mid-stream
            wait_until(lambda: app.state.metrics.value("tuneforge_cancelled_total", "a") == 1, "the cancellation")
            app.state.request_log.flush()
    finally:
        engine.step_hook = None
    row = read_rows(tmp_path / "requests.db")[0]
    assert (row["status"], row["finish_reason"], row["error_code"]) == (499, "cancelled", "client_disconnected")
    assert row["completion_tokens"] <= 2 < 64
