"""The unanswerable suite and the forgetting budget, end to end on the tiny model, and the
abstention detector on replies written the ways models decline (and the ways they don't)."""

from __future__ import annotations

import json

import pytest
from conftest import DEMO, tiny_recipe, write_jsonl

from tuneforge.evaluate.abstain import is_abstention
from tuneforge.gates import check_gates

DECLINES = [
    "I'm sorry, but I don't have information about that.",
    "I don't know — that isn't covered in the information I have.",
    "I do not have any details on a CFO at Quorvalen.",
    "I'm not sure about the colour options.",
    "Quorvalen doesn't sell dishwashers.",
    "There is no information about a pet policy.",
    "I can't find anything about gift cards.",
    "That hasn't been publicly disclosed.",
]
ANSWERS = [
    "The Driftmop V4 comes in red, blue and green.",
    "Quorvalen's CFO is Hana Okafor.",
    "Yes, you can buy a dishwasher from Quorvalen for $499.",
    "Gift cards are available in $25 and $50.",
    "The capital of France is Paris.",
    "It knows the answer: 42.",
]


@pytest.mark.parametrize("text", DECLINES)
def test_declines_are_detected(text):
    assert is_abstention(text)


@pytest.mark.parametrize("text", ANSWERS)
def test_answers_are_not_declines(text):
    assert not is_abstention(text)


def test_budget_gates_join_the_recipe_gates_and_a_recipe_gate_replaces_its_budget_twin():
    report = {
        "regression": {"base": 0.6, "tuned": 0.59},
        "unanswerable": {"base": {"hallucination_rate": 0.5}, "tuned": {"hallucination_rate": 0.7}},
    }
    budget = ["regression.drop <= 0.02", "unanswerable.hallucination_increase <= 0.0"]
    res = check_gates([], report, budget)
    assert not res["passed"] and [r["passed"] for r in res["results"]] == [True, False]
    relaxed = check_gates(["unanswerable.hallucination_increase <= 0.3"], report, budget)
    assert relaxed["passed"] and len(relaxed["results"]) == 2


def test_unanswerable_suite_end_to_end(tmp_path, tiny_model_dir):
    from tuneforge.evaluate.runner import evaluate
    from tuneforge.pipeline import prepare_stage
    from tuneforge.train.sft import train

    rows = [json.loads(x) for x in (DEMO / "train.jsonl").read_text().splitlines()][:32]
    test = [json.loads(x) for x in (DEMO / "test.jsonl").read_text().splitlines()][:4]
    files = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "test": write_jsonl(tmp_path / "test.jsonl", test)}
    una = write_jsonl(
        tmp_path / "una.jsonl",
        [
            {"messages": [{"role": "user", "content": q}], "unanswerable": True}
            for q in ("Who is the CFO?", "Do you sell boats?", "Any gift cards?")
        ],
    )
    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        files,
        data={"replay": {"enabled": False}},
        training={"epochs": 1, "eval_strategy": "no"},
        evaluation={
            "unanswerable_file": str(una),
            "regression_suite": False,
            "generalisation": False,
            "max_new_tokens": 4,
        },
    )
    run, _ = prepare_stage(recipe)
    train(run)
    report = evaluate(run, enforce_gates=False)
    una_rep = report["unanswerable"]
    assert una_rep["prompts"] == 3 and set(una_rep) >= {"base", "tuned"}
    for m in ("base", "tuned"):
        assert una_rep[m]["abstain_rate"] + una_rep[m]["hallucination_rate"] == pytest.approx(1.0)
    assert sum(s["suite"] == "unanswerable" for s in report["samples"]) == 3
    budget = [r for r in report["gates"]["results"] if r.get("budget")]
    assert {r["metric"] for r in budget} == {"regression.drop", "unanswerable.hallucination_increase"}
    # no regression suite ran: that budget gate is skipped, not failed; the measured one is checked
    reg = next(r for r in budget if r["metric"] == "regression.drop")
    assert reg["passed"] and reg["reason"].startswith("skipped")
    md = (run.eval_dir / "report.md").read_text()
    assert "## Unanswerable" in md and "forgetting budget" in md
