"""The server follows a registry alias: promote and rollback change the answering version, live."""

from __future__ import annotations

import time

import pytest
from deploy.helpers import AUTH, KEY, chat_body, wait_until

from .helpers import fake_run

pytestmark = pytest.mark.timeout(120)


def test_promote_and_rollback_switch_the_served_version(tmp_path, tiny_model_dir):
    import torch
    from fastapi.testclient import TestClient

    from tuneforge.deploy.server.app import ServerSettings, create_app
    from tuneforge.deploy.server.engine import Engine, EngineConfig, Job
    from tuneforge.deploy.server.follow import RegistryFollower
    from tuneforge.deploy.server.launch import plan
    from tuneforge.registry import Registry

    torch.set_num_threads(1)
    r1 = fake_run(tmp_path, tiny_model_dir, "support-v1", 1)
    r2 = fake_run(tmp_path, tiny_model_dir, "support-v2", 2)
    reg = Registry(tmp_path / "runs" / "registry.sqlite")
    for r in (r1, r2):
        reg.register(r, "support")
    reg.promote("support", 1)

    p = plan(None, ["registry:support@production"], str(reg.path))  # served as "support"
    assert p.adapters == {"support": str(r1.path.resolve())} and p.followed[0].alias == "production"
    engine = Engine.load(p.base_path, p.base_name, p.adapters, EngineConfig(batch_window_ms=5))
    follower = RegistryFollower(engine, p.followed, p.registry, poll_s=0.05, served=dict(p.adapters)).start()
    app = create_app(
        engine, ServerSettings(api_keys=(KEY,), request_log=str(tmp_path / "requests.db")), close_engine=True
    )
    try:
        with TestClient(app) as client:

            def answer() -> str:
                r = client.post(
                    "/v1/chat/completions",
                    headers=AUTH,
                    json=chat_body("support", "How do I reset my robot?", max_tokens=12),
                )
                assert r.status_code == 200, r.text
                return r.json()["choices"][0]["message"]["content"]

            def serving(run) -> bool:
                return follower.served["support"] == str(run.path.resolve())

            first = answer()
            # a request already queued for version 1 when the alias moves still runs on version 1
            events: list = []
            engine.pause()
            old = engine.get("support")
            engine.submit(Job(old, [engine.chat_prompt(old, [{"role": "user", "content": "hi"}])], 4, events.append))
            t0 = time.monotonic()
            reg.promote("support", 2)
            wait_until(lambda: serving(r2), "the server to follow the promotion")
            swap_s = time.monotonic() - t0
            engine.resume()
            wait_until(lambda: events and events[-1].kind in ("end", "error"), "the queued request")
            assert events[-1].kind == "end" and engine.get("support") is not old
            second = answer()
            assert second != first, "version 2 (another adapter) answers differently"
            assert engine.get("support").path == str(r2.adapter_dir.resolve())
            assert {m["id"] for m in client.get("/v1/models", headers=AUTH).json()["data"]} == {p.base_name, "support"}

            reg.rollback("support")
            wait_until(lambda: serving(r1), "the server to follow the rollback")
            assert answer() == first
            assert follower.swaps == 2 and swap_s < 20
            assert len(engine.model.peft_config) == 1, "replaced versions are unloaded"
    finally:
        follower.close()
