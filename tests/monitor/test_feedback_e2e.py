"""Feedback → dataset → retraining, end to end on the tiny model: a trained v1 is promoted and
served from the registry, users rate and correct answers over the API, `data from-feedback`
turns that into redacted, deduplicated data, and the retraining run records v1 as its parent."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_recipe, write_jsonl
from deploy.helpers import AUTH, KEY, chat_body
from typer.testing import CliRunner

pytestmark = pytest.mark.timeout(300)
FAST = {
    "training": {"epochs": 1, "max_steps": 2, "batch_size": 8},
    "evaluation": {"enabled": False},
    "export": {"enabled": False},
}


def _recipe(tmp_path, model_dir, files, name):
    r = tiny_recipe(tmp_path, model_dir, files, name, **FAST)
    return r.model_copy(update={"registry_name": "support"})


def test_feedback_to_retraining_run(tmp_path, tiny_model_dir, demo_subset):
    import torch
    from fastapi.testclient import TestClient

    from tuneforge.cli import app as cli_app
    from tuneforge.deploy.server.app import ServerSettings, create_app
    from tuneforge.deploy.server.engine import Engine
    from tuneforge.deploy.server.launch import plan
    from tuneforge.io import read_jsonl
    from tuneforge.pipeline import run_all
    from tuneforge.registry import Registry
    from tuneforge.run import RunDir

    torch.set_num_threads(1)
    v1 = run_all(_recipe(tmp_path, tiny_model_dir, demo_subset, "support-v1"), log=lambda *_: None)
    assert v1["registry"]["name"] == "support" and v1["registry"]["version"] == 1  # registered automatically
    reg = Registry(tmp_path / "runs" / "registry.sqlite")
    reg.promote("support", 1)
    run1 = RunDir(v1["run"])
    known = read_jsonl(run1.split_file("train"))[0]["messages"]  # a row v1 was trained on

    db = tmp_path / "requests.db"
    p = plan(None, ["support=registry:support@production"], str(reg.path))
    engine = Engine.load(p.base_path, p.base_name, p.adapters)
    server = create_app(
        engine, ServerSettings(api_keys=(KEY,), request_log=str(db), log_content=True), close_engine=True
    )
    with TestClient(server) as c:

        def ask(q: str, **kw) -> str:
            r = c.post("/v1/chat/completions", headers=AUTH, json=chat_body("support", q, max_tokens=6, **kw))
            assert r.status_code == 200, r.text
            return r.json()["id"]

        def rate(**body):
            return c.post("/v1/feedback", headers=AUTH, json=body)

        a_good, a_bad = (
            ask("Where is my order?", temperature=1.0, seed=1),
            ask("Where is my order?", temperature=1.0, seed=2),
        )
        wrong = ask("How do I contact support?")
        copy = ask(known[0]["content"])
        assert rate(request_id=a_good, rating="up").status_code == 200
        assert rate(request_id=a_bad, rating="down").status_code == 200
        ok = rate(
            request_id=wrong,
            rating="down",
            correction="Write to help@quorvalen.example or call +1 415 555 0134, Dana Whitfield answers.",
        )
        assert ok.status_code == 200 and ok.json()["has_content"] is True
        assert rate(request_id=copy, correction=known[1]["content"]).status_code == 200
        missing = rate(request_id="chatcmpl-nope", rating="up")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "request_not_found"
        assert c.post("/v1/feedback", json={"request_id": wrong, "rating": "up"}).status_code == 401
        empty = rate(request_id=wrong)
        assert empty.status_code == 400 and set(empty.json()["error"]) == {"message", "type", "param", "code"}
        assert rate(request_id=wrong, rating="meh").status_code == 400

    out = tmp_path / "feedback.jsonl"
    res = CliRunner().invoke(cli_app, ["data", "from-feedback", "--log", str(db), "-o", str(out), "--run", v1["run"]])
    assert res.exit_code == 0, res.output
    sft, pairs = read_jsonl(out), read_jsonl(tmp_path / "feedback.preference.jsonl")
    assert len(sft) == 1, "the correction that repeats v1's training data is dropped"
    answer = sft[0]["messages"][-1]["content"]
    assert "<EMAIL>" in answer and "<PHONE>" in answer and "quorvalen.example" not in answer
    assert sft[0]["messages"][0] == {"role": "user", "content": "How do I contact support?"}
    kinds = sorted(x["provenance"]["pair"] for x in pairs)
    assert "rated" in kinds and "correction" in kinds
    rated = next(x for x in pairs if x["provenance"]["pair"] == "rated")
    assert rated["prompt"] == "Where is my order?" and rated["chosen"] != rated["rejected"]

    train = tmp_path / "retrain.jsonl"
    write_jsonl(train, read_jsonl(demo_subset["train"]) + sft)
    v2 = run_all(_recipe(tmp_path, tiny_model_dir, {**demo_subset, "train": train}, "support-v2"), log=lambda *_: None)
    parent = RunDir(v2["run"]).manifest()["parent"]
    assert (parent["name"], parent["version"], parent["run_dir"]) == ("support", 1, str(run1.path.resolve()))
    assert v2["registry"]["version"] == 2 and v2["registry"]["parent"] == "support@1"
    assert any(
        "<EMAIL>" in json.dumps(r)
        for r in read_jsonl(RunDir(v2["run"]).split_file("train"))
        + read_jsonl(RunDir(v2["run"]).split_file("validation"))
    )
