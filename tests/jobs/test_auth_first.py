"""Every route but /health answers 401 without a key — from the headers alone, before any body is read.

Walks the app's own route table (the jobs API mounted too), so a route added later is covered.
"""

from __future__ import annotations

import re

import pytest
from deploy.conftest import one_thread  # noqa: F401 (autouse: one torch thread, the CPU is shared)
from deploy.helpers import KEY


@pytest.fixture
def app_and_log(engine, jobs_cfg, tmp_path):
    from tuneforge.deploy.server.app import ServerSettings, create_app
    from tuneforge.jobs.routes import mount

    log = tmp_path / "requests.db"
    cfg = jobs_cfg.__class__(**{**jobs_cfg.__dict__, "worker": False})
    return create_app(engine, ServerSettings(api_keys=(KEY,), request_log=str(log), **mount(cfg))), log


def _routes(routes, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) of every route, included routers flattened (FastAPI >= 0.120 keeps an
    included router as one `_IncludedRouter` entry holding the original router)."""
    out = []
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            out += _routes(inner.routes, prefix + r.include_context.prefix)
            continue
        if getattr(r, "include_in_schema", True) is False and r.path.startswith(("/docs", "/redoc", "/openapi")):
            continue
        for method in sorted(getattr(r, "methods", None) or ()):
            if method != "HEAD":
                out.append((method, prefix + re.sub(r"\{[^}]+\}", "x", r.path)))
    return out


def test_every_route_refuses_a_request_without_a_valid_key(app_and_log):
    from fastapi.testclient import TestClient

    app, log = app_and_log
    routes = _routes(app.routes)
    assert ("POST", "/v1/chat/completions") in routes and ("POST", "/v1/files") in routes  # jobs API mounted
    assert len(routes) >= 15
    with TestClient(app) as client:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                for body in (None, b"{bad json", b"x" * (3 << 20)):  # none, malformed, over the body limit
                    res = client.request(method, path, content=body, headers=headers)
                    if path == "/health":
                        assert res.status_code in (200, 405), (method, path)
                        continue
                    assert res.status_code == 401, (method, path, headers, body and body[:9], res.text)
                    assert res.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/health").status_code == 200
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    if log.exists():  # refused requests leave no trace in the request log
        import sqlite3

        assert sqlite3.connect(log).execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(app_and_log):
    """The 401 comes while the client is still sending: the server never asked for the body."""
    import asyncio

    app, _ = app_and_log
    received = []

    async def run() -> list[dict]:
        sent = []

        async def receive():
            received.append(1)
            return {"type": "http.request", "body": b"x" * (1 << 20), "more_body": True}

        async def send(msg):
            sent.append(msg)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/files",
            "headers": [(b"content-type", b"multipart/form-data; boundary=x")],
            "query_string": b"",
        }
        await app.middleware_stack(scope, receive, send) if app.middleware_stack else None
        return sent

    app.middleware_stack = app.build_middleware_stack()
    sent = asyncio.run(run())
    assert sent[0]["status"] == 401 and received == []
