"""The CLI is a thin layer: check it reports problems readably and exits non-zero."""

from __future__ import annotations

import json

from conftest import DEMO
from typer.testing import CliRunner

from tuneforge.cli import app

runner = CliRunner()


def test_recipe_validate_misspelt_section(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("trainig:\n  epochs: 1\nstrategy:\n  r: 0\n")
    res = runner.invoke(app, ["recipe", "validate", str(p)])
    assert res.exit_code == 2
    out = res.output
    assert "trainig: unknown key" in out and "did you mean 'training'" in out and "strategy.r" in out


def test_recipe_validate_ok_with_overrides():
    res = runner.invoke(app, ["recipe", "validate", "recipes/demo.yaml", "training.epochs=1"])
    assert res.exit_code == 0, res.output


def test_recipe_explain_lists_fields():
    res = runner.invoke(app, ["recipe", "explain"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "training.learning_rate" in res.output


def test_data_inspect_names_each_broken_line():
    res = runner.invoke(app, ["data", "inspect", str(DEMO / "broken.jsonl"), "--no-tokens"])
    assert res.exit_code == 1
    for code in (
        "invalid_json",
        "not_an_object",
        "missing_messages",
        "empty_messages",
        "unrecognized_role",
        "missing_content",
        "no_assistant_message",
    ):
        assert code in res.output, code
    assert "line 2" in res.output


def test_data_inspect_clean_file(tmp_path):
    p = tmp_path / "ok.jsonl"
    p.write_text(json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n")
    res = runner.invoke(app, ["data", "inspect", str(p), "--no-tokens"])
    assert res.exit_code == 0 and "alpaca" in res.output and "problems: none" in res.output


def test_stage_on_missing_run_dir_is_clear(tmp_path):
    res = runner.invoke(app, ["train", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a tuneforge run directory" in res.output


def test_chat_one_shot_on_trained_tiny_run(tmp_path, tiny_model_dir, demo_subset):
    from conftest import tiny_recipe

    from tuneforge.pipeline import run_all

    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        demo_subset,
        training={"max_steps": 2},
        evaluation={"enabled": False},
        export={"enabled": False},
    )
    summary = run_all(recipe, log=lambda *_: None)
    res = runner.invoke(
        app, ["chat", summary["run"], "--prompt", "What does the Driftmop cost?", "--max-new-tokens", "5"]
    )
    assert res.exit_code == 0, res.output
    assert res.output.strip() != ""


def test_chat_interactive_loop_keeps_history(tmp_path, tiny_model_dir, demo_subset):
    from conftest import tiny_recipe

    from tuneforge.deploy.chat import ChatSession
    from tuneforge.pipeline import run_all
    from tuneforge.run import RunDir

    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        demo_subset,
        training={"max_steps": 1},
        evaluation={"enabled": False},
        export={"enabled": False},
    )
    run_all(recipe, log=lambda *_: None)
    session = ChatSession(RunDir(recipe.run_path()), max_new_tokens=3)
    inputs = iter(["hello", "again", "/exit"])
    out: list[str] = []
    session.loop(read=lambda _: next(inputs), write=out.append)
    assert len(session.history) == 4 and sum(o.startswith("model>") for o in out) == 2


def test_run_prints_summary_with_measured_golden_result(tmp_path, tiny_model_dir, demo_subset):
    import yaml
    from conftest import tiny_recipe

    recipe = tiny_recipe(
        tmp_path, tiny_model_dir, demo_subset, training={"max_steps": 2}, evaluation={"compare_base": False}
    )
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe.to_dict()))
    res = runner.invoke(app, ["run", str(path)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "golden prompts: identical" in res.output
    assert "first loss" in res.output and f"tuneforge chat {recipe.run_path()}" in res.output


def test_export_error_inside_run_is_reported_without_traceback():
    """`tuneforge run … export.formats=[]` used to end in a traceback once training was done."""
    import pytest
    import typer

    from tuneforge.cli.main import _guard
    from tuneforge.deploy.export import ExportError

    def stage():
        raise ExportError("nothing to export: export.formats is empty; choose from adapter, merged, gguf, quantized")

    with pytest.raises(typer.Exit) as exc:
        _guard(stage)
    assert exc.value.exit_code != 0
