"""compare-approaches end to end on the tiny model and a tiny index; chat --rag."""

from __future__ import annotations

import json

import pytest
from conftest import DEMO, tiny_recipe
from typer.testing import CliRunner

from tuneforge.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A prepared tiny run with a LoRA adapter (random, non-zero: training is tested elsewhere, and
    skipping it keeps this module fast) and an index of the handbook's first part."""
    import shutil

    import torch
    from conftest import ASSETS
    from deploy.helpers import make_adapter

    from tuneforge.pipeline import prepare_stage
    from tuneforge.rag.index import KnowledgeIndex

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("rag-compare")
    lines = (DEMO / "train.jsonl").read_text().splitlines()
    (tmp / "train.jsonl").write_text("\n".join(lines[:24]) + "\n")
    (tmp / "test.jsonl").write_text("\n".join((DEMO / "test.jsonl").read_text().splitlines()[:8]) + "\n")
    rec = tiny_recipe(tmp, tiny_model_dir, {"train": tmp / "train.jsonl", "test": tmp / "test.jsonl"}, name="ragcmp")
    run, _ = prepare_stage(rec)
    make_adapter(tiny_model_dir, run.adapter_dir, seed=3)
    for f in (ASSETS / "tiny-tokenizer").iterdir():  # a trained run's adapter/ carries its tokenizer
        shutil.copy(f, run.adapter_dir / f.name)
    handbook = (DEMO / "handbook.md").read_text()
    (tmp / "handbook.md").write_text(handbook[: handbook.index("## Products")])  # company, brand, app: 5 chunks
    index = KnowledgeIndex.open(tmp / "index", create=True)
    index.update([tmp / "handbook.md"], root=tmp)
    index.close()
    (tmp / "update.json").write_text(json.dumps({"changes": [{"old": "Hearthlink", "new": "Emberlink"}]}))
    return run, tmp


def test_compare_approaches_end_to_end(trained):
    run, tmp = trained
    out = tmp / "report"
    res = runner.invoke(
        app,
        [
            "compare-approaches",
            str(run.path),
            "--index",
            str(tmp / "index"),
            "-o",
            str(out),
            "--limit",
            "4",
            "--max-new-tokens",
            "4",
            "--few-shot",
            "2",
            "--top-k",
            "2",
            "--update",
            str(tmp / "update.json"),
            "--batch-size",
            "2",
            "--latency-requests",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    ap = rep["approaches"]
    assert list(ap) == ["base", "base+few-shot", "base+rag", "fine-tuned", "fine-tuned+rag"]
    for name, m in ap.items():
        assert m["examples"] == 4 and 0 <= m["fact_accuracy"] <= 1 and m["latency_ms_mean"] > 0
        assert m["citations"] == name.endswith("+rag") and m["timed_requests"] == 2
    # cost: passages and examples make the prompt longer than the question alone
    assert ap["base+rag"]["prompt_tokens_mean"] > ap["base"]["prompt_tokens_mean"]
    assert ap["base+few-shot"]["prompt_tokens_mean"] > ap["base"]["prompt_tokens_mean"]
    assert ap["fine-tuned+rag"]["retrieval_ms_mean"] > 0 and ap["fine-tuned"]["retrieval_ms_mean"] < 1
    assert ap["base+rag"]["retrieval_recall"] > 0.5  # the cited passages hold the answers

    upd = rep["update"]
    assert upd["changed"] and upd["chunks_embedded"] == 1 and upd["chunks_reused"] >= 3  # incremental
    assert upd["questions"] == 2  # the two test questions about the app's name
    for name in ("base+rag", "fine-tuned+rag"):  # the updated index serves the new fact at once
        assert upd["approaches"][name]["context_has_new_fact"] == 1.0
    assert upd["approaches"]["fine-tuned"]["context_has_new_fact"] is None
    assert all("Emberlink" not in s["answer"] for s in upd["samples"] if s["approach"] == "fine-tuned")
    assert "Hearthlink" in (tmp / "handbook.md").read_text()  # the original document is untouched
    assert "Emberlink" in (out / "docs-updated" / "handbook.md").read_text()

    md = (out / "report.md").read_text()
    assert "## Knowledge update" in md and "## Recommendation" in md and rep["recommendation"]["choice"] in (None, *ap)
    assert (out / "approaches.png").stat().st_size > 1000
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 20 and all(s["citations"] for s in samples if s["approach"].endswith("+rag"))


def test_one_request_at_a_time_times_every_question(trained):
    from tuneforge.evaluate.approaches import _builders, load_variants, run_approach
    from tuneforge.rag.retrieve import Retriever

    run, tmp = trained
    rows = [json.loads(line) for line in (tmp / "test.jsonl").read_text().splitlines()[:3]]
    variants, tok = load_variants(run)
    model, ctx = variants["fine-tuned"]
    with ctx():
        res = run_approach(model, tok, rows, _builders(Retriever.open(tmp / "index", top_k=1), [], 0)["rag"], 3)
    m = res["metrics"]
    assert m["timed_requests"] == 3 and m["examples"] == 3 and len(res["outputs"]) == 3
    assert all(len(c) == 1 for c in res["citations"]) and m["latency_ms_p95"] >= m["latency_ms_p50"] > 0


def test_chat_with_rag_cites_and_keeps_plain_history(trained):
    from tuneforge.deploy.chat import ChatSession, format_citations
    from tuneforge.rag.retrieve import Retriever

    run, tmp = trained
    session = ChatSession(run, max_new_tokens=3, retriever=Retriever.open(tmp / "index", top_k=1))
    session.ask("What is the name of the Quorvalen companion app?")
    assert session.citations[0]["heading"].endswith("Brand, app and chat")
    assert session.history[0]["content"] == "What is the name of the Quorvalen companion app?"  # no context in history
    assert "Brand, app and chat" in format_citations(session.citations)


def _m(acc, tokens, ms):
    return {"fact_accuracy": acc, "prompt_tokens_mean": tokens, "latency_ms_mean": ms, "retrieval_ms_mean": 5.0}


def test_recommendation_follows_the_numbers_and_the_stated_needs():
    from tuneforge.rag.report import recommend

    ap = {
        "base": _m(0.0, 40, 100),
        "base+few-shot": _m(0.05, 120, 150),
        "base+rag": _m(0.70, 400, 300),
        "fine-tuned": _m(0.88, 40, 100),
        "fine-tuned+rag": _m(0.90, 400, 300),
    }
    upd = {
        "changes": [{"old": "a", "new": "b"}],
        "reindex_seconds": 0.2,
        "chunks_embedded": 1,
        "chunks_reused": 9,
        "questions": 2,
        "approaches": {
            "base+rag": {"new_fact_accuracy": 1.0},
            "fine-tuned+rag": {"new_fact_accuracy": 0.5},
            "fine-tuned": {"new_fact_accuracy": 0.0, "old_fact_rate": 1.0},
        },
    }
    rec = recommend(ap, upd, 300.0)
    assert rec["choice"] == "fine-tuned"  # within 5 points of the best at a tenth of the prompt
    assert "2.0 points better" in rec["reason"] and any("fine-tuned+rag" in a for a in rec["alternatives"])
    assert any("still gave the old value in 100.0%" in p for p in rec["points"])
    assert recommend(ap, upd, 300.0, volatility="high")["choice"] == "fine-tuned+rag"
    assert recommend(ap, None, None, citations_needed=True)["choice"] == "fine-tuned+rag"
    assert recommend(ap, None, None, volatility="low")["choice"] == "fine-tuned"
    ap["fine-tuned"] = _m(0.5, 40, 100)
    assert recommend(ap, None, None)["choice"] == "fine-tuned+rag"  # nothing cheap comes close
    assert recommend({k: {**v, "fact_accuracy": 0.0} for k, v in ap.items()}, None, None)["choice"] is None
