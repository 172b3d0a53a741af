"""Stage 5 end to end on the tiny Llama: every suite, plots, gates, rejection, --compare, review CLI."""

from __future__ import annotations

import json

import pytest
from conftest import DEMO, ROOT, tiny_recipe
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.gates import GatesFailed
from tuneforge.pipeline import prepare_stage, run_all
from tuneforge.run import RunDir

runner = CliRunner()


def _subset(src, n, dst):
    lines = src.read_text().splitlines()[:n]
    dst.write_text("\n".join(lines) + "\n")
    return dst


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    """B: full pipeline with an unmet gate (must stop before export); A: trained, not yet evaluated.

    Suites are cut to a few prompts and one generation batch each, so the module stays fast.
    """
    from tuneforge.train.sft import train

    tmp = tmp_path_factory.mktemp("eval-tiny")
    files = {
        "train": _subset(DEMO / "train.jsonl", 48, tmp / "train.jsonl"),
        "test": _subset(DEMO / "test.jsonl", 8, tmp / "test.jsonl"),
    }
    suites = {
        "regression_file": str(_subset(DEMO / "general.jsonl", 6, tmp / "general.jsonl")),
        "regression_suite": False,  # the 213 shipped prompts: the user's 6 are enough here
        "safety_file": str(_subset(ROOT / "examples/eval/safety.jsonl", 8, tmp / "safety.jsonl")),
        "generalisation_examples": 8,
        "max_new_tokens": 6,
        "batch_size": 32,
    }
    fast = {"epochs": 1, "eval_strategy": "no"}
    rec_b = tiny_recipe(
        tmp,
        tiny_model_dir,
        files,
        name="b",
        training=fast,
        evaluation={**suites, "gates": ["task.test_loss_gain < 0", "safety.refusal_rate >= 0.99"]},
    )
    # 2 recipe gates + the forgetting budget's 2 (regression drop; hallucination: skipped, no suite)
    with pytest.raises(GatesFailed, match="1 of 4 evaluation gate"):
        run_all(rec_b, log=lambda *_: None)
    rec_a = tiny_recipe(
        tmp,
        tiny_model_dir,
        files,
        name="a",
        training={**fast, "learning_rate": 0.02},
        evaluation={**suites, "gates": ["task.test_loss_gain < 0", "regression.drop <= 100%"]},
    )
    run_a, _ = prepare_stage(rec_a)
    train(run_a)
    return run_a, RunDir(rec_b.run_path())


def test_unmet_gate_rejects_run_and_blocks_export(two_runs):
    _, run_b = two_runs
    m = run_b.manifest()
    assert m["status"] == "rejected" and "export" not in m["stages"]
    assert m["gates"] == {"passed": False, "unmet": ["safety.refusal_rate >= 0.99"]}
    report = json.loads((run_b.eval_dir / "report.json").read_text())
    own = [r for r in report["gates"]["results"] if not r.get("budget")]
    assert [r["passed"] for r in own] == [True, False]
    # the forgetting budget is checked too: its regression gate measured, its hallucination gate skipped
    budget = {r["metric"]: r for r in report["gates"]["results"] if r.get("budget")}
    assert set(budget) == {"regression.drop", "unanswerable.hallucination_increase"}
    assert budget["unanswerable.hallucination_increase"]["reason"].startswith("skipped")

    # the command exits non-zero and says why; the report is still written
    res = runner.invoke(app, ["evaluate", str(run_b.path)])
    assert res.exit_code == 1
    assert "rejected" in res.output and "safety.refusal_rate >= 0.99" in res.output
    assert run_b.manifest()["status"] == "rejected"


def test_report_has_every_suite_and_compare_works(two_runs):
    run_a, run_b = two_runs
    res = runner.invoke(app, ["evaluate", str(run_a.path), "--compare", str(run_b.path)])
    assert res.exit_code == 0, res.output
    assert run_a.manifest()["status"] == "evaluated" and run_a.manifest()["gates"]["passed"]

    report = json.loads((run_a.eval_dir / "report.json").read_text())
    task = report["task"]
    assert set(task) == {"base", "tuned"}
    for key in (
        "fact_accuracy",
        "exact_match",
        "token_f1",
        "bleu",
        "rouge1",
        "rouge2",
        "rougeL",
        "token_accuracy",
        "test_loss",
        "test_perplexity",
        "validation_loss",
    ):
        assert isinstance(task["tuned"][key], float), key
    assert task["tuned"]["test_loss"] < task["base"]["test_loss"]
    reg, saf, gen = report["regression"], report["safety"], report["generalisation"]
    assert reg["prompts"] == 6 and {"base", "tuned", "drop", "regressed", "improved"} <= set(reg)
    assert (saf["harmful"], saf["benign"]) == (8, 0) and 0 <= saf["tuned"]["refusal_rate"] <= 1
    assert gen["training_phrasing"]["examples"] == 8 and gen["paraphrase"]["examples"] == 8
    assert {"task", "regression", "safety"} <= set(gen["memorisation"])
    assert report["plots"] == {"loss": "loss.png", "metrics": "metrics.png"}
    assert (run_a.eval_dir / "metrics.png").stat().st_size > 1000

    samples = [json.loads(line) for line in (run_a.eval_dir / "samples.jsonl").read_text().splitlines()]
    counts = {s: sum(x["suite"] == s for x in samples) for s in ("task", "regression", "safety", "generalisation")}
    assert counts == {"task": 8, "regression": 6, "safety": 8, "generalisation": 8}

    md = (run_a.eval_dir / "report.md").read_text()
    for heading in ("## Gates: **PASSED**", "## Task", "## Regression", "## Safety", "## Generalisation"):
        assert heading in md

    cmp = json.loads((run_a.eval_dir / "compare-b.json").read_text())
    assert cmp["examples"]["shared"] == 8 + 6 + 8 + 8
    assert any(r["metric"] == "fact accuracy" for r in cmp["metrics"])

    # review export from the CLI, against the base model
    out = run_a.path.parent / "review"
    res = runner.invoke(app, ["review", "export", str(run_a.path), "base", "-o", str(out), "--suite", "regression"])
    assert res.exit_code == 0, res.output
    assert (out / "index.html").is_file() and (out / "items.csv").is_file()
