"""`tuneforge serve` planning: runs, adapter folders, names, API keys; the CLI's errors."""

from __future__ import annotations

import pytest
from conftest import tiny_recipe

from tuneforge.deploy.server.engine import AdapterError
from tuneforge.deploy.server.launch import api_keys, parse_adapter, plan

from .helpers import make_adapter


@pytest.fixture
def tiny_run(tmp_path, tiny_model_dir, demo_subset):
    """A run directory with an adapter (made directly: no training needed to test serving)."""
    from tuneforge.run import RunDir

    recipe = tiny_recipe(
        tmp_path, tiny_model_dir, demo_subset, name="support", data={"system_prompt": "You are Acme support."}
    )
    run = RunDir.create(recipe)
    make_adapter(tiny_model_dir, run.adapter_dir, seed=5)
    return run


def test_plan_for_a_run_serves_its_base_and_its_adapter(tiny_run, tiny_model_dir, adapters):
    p = plan(str(tiny_run.path), [f"x={adapters['a']}"])
    assert p.base_path == str(tiny_model_dir) and p.base_name == tiny_model_dir.name
    assert p.adapters == {"support": str(tiny_run.path), "x": str(adapters["a"])}


def test_plan_without_a_base_takes_it_from_the_first_adapter(tiny_run, tiny_model_dir, adapters):
    assert plan(None, [str(adapters["b"])]).base_path == str(tiny_model_dir)  # adapter_config.json
    assert plan(None, [str(tiny_run.adapter_dir)]).adapters == {"support": str(tiny_run.adapter_dir)}


@pytest.mark.parametrize("specs", [["bad name=x"], ["a=/nonexistent"], []])
def test_plan_rejects_bad_adapters_before_loading_anything(specs):
    with pytest.raises(AdapterError):
        plan(None, specs)


def test_parse_adapter_names():
    assert parse_adapter("support=runs/x") == ("support", "runs/x")


def test_api_keys_from_flag_env_or_generated(monkeypatch):
    said = []
    assert api_keys(["k1"], said.append) == (("k1",), False)
    monkeypatch.setenv("TUNEFORGE_API_KEYS", "k2, k3")
    assert api_keys(None, said.append) == (("k2", "k3"), False)
    monkeypatch.delenv("TUNEFORGE_API_KEYS")
    keys, generated = api_keys(None, said.append)
    assert generated and keys[0].startswith("tf-") and keys[0] in said[0]


def test_a_served_run_keeps_its_training_system_prompt(engine, tiny_run):
    entry = engine.add_adapter("support-run", tiny_run.path)
    try:
        assert entry.system_prompt == "You are Acme support."
        text = engine.tokenizer.decode(engine.chat_prompt(entry, [{"role": "user", "content": "hi"}]))
        assert "You are Acme support." in text
        own = engine.chat_prompt(entry, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
        assert "Acme" not in engine.tokenizer.decode(own)
    finally:
        engine.remove_adapter("support-run")


def test_cli_serve_reports_a_bad_adapter(tmp_path):
    from typer.testing import CliRunner

    from tuneforge.cli import app

    res = CliRunner().invoke(app, ["serve", "--api-key", "k", "--adapter", f"x={tmp_path}"])
    assert res.exit_code == 2 and "adapter_config.json" in res.output
