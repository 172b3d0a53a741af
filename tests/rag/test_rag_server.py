"""RAG in the server: per-model index, passages in the prompt, citations in the response."""

from __future__ import annotations

import json

import pytest
from deploy.helpers import AUTH, KEY, chat_body, load_engine


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    eng = load_engine(tiny_model_dir, batch_window_ms=1)
    yield eng
    eng.close()
    torch.set_num_threads(before)


@pytest.fixture
def client(engine, kb_index, tmp_path):
    from fastapi.testclient import TestClient

    from tuneforge.deploy.server.app import ServerSettings, create_app
    from tuneforge.deploy.server.rag import RagRouter

    router = RagRouter.from_specs([f"tiny={kb_index / 'index'}"], models=["tiny"], top_k=2)
    app = create_app(engine, ServerSettings(api_keys=(KEY,), request_log=str(tmp_path / "r.db"), rag=router))
    with TestClient(app) as c:
        yield c
    router.close()


def test_chat_answer_carries_citations_of_the_right_chunk(client):
    q = "How much does the Zorblat blender cost?"
    res = client.post("/v1/chat/completions", headers=AUTH, json=chat_body(content=q, max_tokens=4))
    assert res.status_code == 200, res.text
    body = res.json()
    cites = body["tuneforge_citations"]
    assert len(cites) == 2 and cites[0]["source"] == "docs/products.md"
    assert cites[0]["heading"].endswith("Zorblat blender") and cites[0]["score"] >= cites[1]["score"]
    assert set(cites[0]) == {"source", "chunk", "chunk_id", "heading", "score"}

    # the passages really were in the prompt: turning RAG off for this request shrinks it
    off = client.post(
        "/v1/chat/completions", headers=AUTH, json=chat_body(content=q, max_tokens=4, tuneforge_rag={"enabled": False})
    ).json()
    assert "tuneforge_citations" not in off
    assert body["usage"]["prompt_tokens"] > off["usage"]["prompt_tokens"] + 20

    one = client.post(
        "/v1/chat/completions", headers=AUTH, json=chat_body(content=q, max_tokens=2, tuneforge_rag={"top_k": 1})
    ).json()
    assert [c["chunk_id"] for c in one["tuneforge_citations"]] == [cites[0]["chunk_id"]]
    none = client.post(
        "/v1/chat/completions",
        headers=AUTH,
        json=chat_body(content=q, max_tokens=2, tuneforge_rag={"score_threshold": 0.99}),
    ).json()
    assert none["tuneforge_citations"] == [] and none["usage"]["prompt_tokens"] == off["usage"]["prompt_tokens"]


def test_streaming_sends_citations_first_and_bad_rag_requests_are_rejected(client):
    body = chat_body(content="What is the warranty?", max_tokens=3, stream=True)
    with client.stream("POST", "/v1/chat/completions", headers=AUTH, json=body) as res:
        lines = [json.loads(line[6:]) for line in res.iter_lines() if line.startswith("data: {")]
    assert lines[0]["tuneforge_citations"][0]["source"] == "docs/help.html"
    assert all("tuneforge_citations" not in c for c in lines[1:])

    too_many = client.post("/v1/chat/completions", headers=AUTH, json=chat_body(tuneforge_rag={"top_k": 99}))
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "tuneforge_rag.top_k"
    typo = client.post("/v1/chat/completions", headers=AUTH, json=chat_body(tuneforge_rag={"topk": 1}))
    assert typo.status_code == 400


def test_model_without_index_refuses_rag_options(engine, tmp_path, kb_index):
    from fastapi.testclient import TestClient

    from tuneforge.deploy.server.app import ServerSettings, create_app
    from tuneforge.deploy.server.rag import RagRouter

    with pytest.raises(ValueError, match="no served model is called 'other'"):
        RagRouter.from_specs([f"other={kb_index / 'index'}"], models=["tiny"])
    app = create_app(engine, ServerSettings(api_keys=(KEY,), request_log=None))
    with TestClient(app) as c:
        res = c.post("/v1/chat/completions", headers=AUTH, json=chat_body(max_tokens=2, tuneforge_rag={"top_k": 2}))
        assert res.status_code == 400 and res.json()["error"]["code"] == "rag_not_configured"
        plain = c.post("/v1/chat/completions", headers=AUTH, json=chat_body(max_tokens=2))
        assert plain.status_code == 200 and "tuneforge_citations" not in plain.json()
