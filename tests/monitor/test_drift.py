"""Drift: a planted shifted prompt set is flagged, a same-distribution set is not (both embedders)."""

from __future__ import annotations

import json
import random

import pytest
from conftest import DEMO, ROOT, write_jsonl
from typer.testing import CliRunner

from tuneforge.monitor.config import DriftConfig
from tuneforge.monitor.drift import detect_drift, ks_test, mmd_permutation_test
from tuneforge.monitor.embed import make_embedder

from .helpers import write_log


def _users(path):
    return [json.loads(l)["messages"][0]["content"] for l in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def prompts():
    train = _users(DEMO / "train.jsonl")
    random.Random(0).shuffle(train)
    shifted = _users(DEMO / "general.jsonl") + _users(ROOT / "examples" / "eval" / "safety.jsonl")
    return {"reference": train[:64], "same": train[64:128], "shifted": shifted}  # kept small: CPU time


@pytest.mark.parametrize("embedder", ["minilm", "hashing"])
def test_shifted_prompts_drift_and_same_distribution_does_not(prompts, embedder):
    cfg = DriftConfig(permutations=200)
    emb = make_embedder(embedder)
    same = detect_drift(prompts["reference"], prompts["same"], cfg, emb)
    assert not same["drifted"], same["reasons"]
    assert same["embedding"]["p_value"] >= cfg.p_value and same["topics"]["new_topic_rate"] < cfg.max_new_topic_rate
    shifted = detect_drift(prompts["reference"], prompts["shifted"], cfg, emb)
    assert shifted["drifted"] and shifted["embedding"]["p_value"] < cfg.p_value
    assert shifted["topics"]["new_topic_rate"] > 0.5 > same["topics"]["new_topic_rate"]


def test_two_sample_tests_on_toy_data():
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)), rng.normal(size=(60, 4))
    assert mmd_permutation_test(x, y, 200)["p_value"] > 0.05
    assert mmd_permutation_test(x, y + 1.0, 200)["p_value"] < 0.01
    assert ks_test(list(range(100)), list(range(100)))["p_value"] == 1.0
    assert ks_test(list(range(100)), list(range(50, 150)))["p_value"] < 1e-3


def test_check_with_a_run_exits_nonzero_only_on_drift(prompts, tmp_path):
    from tuneforge.cli import app
    from tuneforge.run import RunDir

    run = RunDir(tmp_path / "run")
    run.data_dir.mkdir(parents=True)
    (run.path / "recipe.yaml").write_text("name: run\n")
    (run.path / "manifest.json").write_text("{}")
    write_jsonl(
        run.split_file("train"),
        [
            {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}]}
            for p in prompts["reference"]
        ],
    )
    cli = CliRunner()
    for name, expect in (("same", 0), ("shifted", 1)):
        log = write_log(tmp_path / f"{name}.db", [{"user": p} for p in prompts[name]])
        res = cli.invoke(app, ["monitor", "check", "--log", str(log), "--run", str(run.path)])
        assert res.exit_code == expect, res.output
    assert "embedding distribution shift" in res.output
    out = tmp_path / "drift.html"
    assert (
        cli.invoke(app, ["monitor", "report", "--log", str(log), "--run", str(run.path), "-o", str(out)]).exit_code == 0
    )
    assert out.read_text().count("data:image/png;base64,") == 2  # windows + drift plots
