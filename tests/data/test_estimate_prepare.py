"""Training-time estimate from measured steps, `tuneforge data prepare`, and saved `datasets` folders."""

from __future__ import annotations

import json

import pytest
from conftest import DEMO, tiny_recipe, write_jsonl
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.data.validate import load_validated

runner = CliRunner()


def _demo_rows(n: int) -> list[dict]:
    return [json.loads(x) for x in (DEMO / "train.jsonl").read_text().splitlines()[:n]]


@pytest.mark.parametrize("precision, max_steps", [("fp32", -1), ("bf16", 10)])
def test_estimate_time_measures_the_trainers_step(tiny_model_dir, tiny_tokenizer, precision, max_steps):
    from tuneforge.data.card import describe
    from tuneforge.data.inspect import estimate
    from tuneforge.train.estimate import estimate_time

    rows = load_validated(DEMO / "train.jsonl").rows[:24]
    t = estimate_time(
        rows,
        str(tiny_model_dir),
        precision=precision,
        batch_size=4,
        epochs=2,
        max_steps=max_steps,
        gradient_accumulation=2,
    )
    assert t["bf16_autocast"] is (precision == "bf16")
    assert t["base_weights_dtype"] == ("bfloat16" if precision == "bf16" else "float32")
    assert t["measured_steps"] == 2 and t["batch_size"] == 4 and t["strategy"] == "lora r=16"
    assert t["tokens_per_step"] > 0 and t["tokens_per_second"] > 0 and t["seconds"] > 0
    # tokens per epoch are the same tokens `data inspect` counts (real tokens, no padding)
    assert t["tokens_per_epoch"] == estimate(rows, tiny_tokenizer)["tokens"]["total"]
    if max_steps > 0:  # the run stops after max_steps optimiser steps of gradient_accumulation batches
        planned, basis = t["tokens_per_step"] * 2 * 10, "10 step(s) × 2 batch(es)"
    else:
        planned, basis = t["tokens_per_epoch"] * 2, "tokens per epoch × 2 epoch(s)"
    assert t["seconds"] == pytest.approx(planned / t["tokens_per_second"], rel=0.01, abs=0.002)
    assert basis in t["basis"] and "tok/s" in describe(t)


def test_inspect_estimate_cli(tiny_model_dir):
    res = runner.invoke(
        app, ["data", "inspect", str(DEMO / "train.jsonl"), "--model", str(tiny_model_dir), "--estimate"]
    )
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("time:"))
    assert "on this machine" in line and "tok/s" in line and "measured over 2 step(s) of batch 8" in line
    bad = runner.invoke(app, ["data", "inspect", str(DEMO / "train.jsonl"), "--no-tokens", "--estimate"])
    assert bad.exit_code == 2 and "needs a model" in bad.output


def test_data_prepare_reads_a_saved_datasets_folder(tmp_path, tiny_model_dir):
    from datasets import Dataset

    rows = _demo_rows(40)
    rows[0]["messages"][1]["weight"] = 1  # Arrow gives every other message weight=None
    rows[0]["note"] = "kept"  # ... and every other row note=None (columns come from the first row)
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    test = write_jsonl(
        tmp_path / "test.jsonl", [json.loads(x) for x in (DEMO / "test.jsonl").read_text().splitlines()[:4]]
    )
    recipe = tiny_recipe(
        tmp_path, tiny_model_dir, {"train": tmp_path / "ds", "test": test}, data={"plots": False, "estimate_time": True}
    )
    (tmp_path / "r.yaml").write_text(recipe.to_yaml())
    res = runner.invoke(app, ["data", "prepare", str(tmp_path / "r.yaml")])
    assert res.exit_code == 0, res.output
    card = json.loads((recipe.run_path() / "data" / "data_card.json").read_text())
    src = card["sources"]["train"]
    assert src["format"] == "messages" and src["rows_valid"] == 40 and src["rows_invalid"] == 0
    prepared = [json.loads(x) for x in (recipe.run_path() / "data" / "train.jsonl").read_text().splitlines()]
    prepared += [json.loads(x) for x in (recipe.run_path() / "data" / "validation.jsonl").read_text().splitlines()]
    assert all("weight" not in m or m["weight"] == 1 for r in prepared for m in r["messages"])
    assert sum("note" in r for r in prepared) == 1
    t = card["estimate"]["time"]
    assert t["epochs"] == 3 and t["batch_size"] == 4 and t["tokens_per_second"] > 0 and t["seconds"] > 0
    assert "training time: ~" in (recipe.run_path() / "data" / "data_card.md").read_text()


def test_prepare_alias_matches_top_level_errors(tmp_path):
    for cmd in (["prepare"], ["data", "prepare"]):
        res = runner.invoke(app, cmd + [str(tmp_path / "missing.yaml")])
        assert res.exit_code == 2 and "file not found" in res.output
