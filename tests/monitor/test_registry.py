"""The registry: versions, lineage, promotion (refused for rejected runs), rollback, diff, CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tuneforge.registry import Registry, RegistryError, record_parent

from .helpers import fake_run


@pytest.fixture
def reg(tmp_path):
    return Registry(tmp_path / "runs" / "registry.sqlite")


def test_versions_promote_rollback_and_diff(tmp_path, tiny_model_dir, reg):
    r1 = fake_run(tmp_path, tiny_model_dir, "support-v1", 1)
    r2 = fake_run(tmp_path, tiny_model_dir, "support-v2", 2)
    bad = fake_run(tmp_path, tiny_model_dir, "support-v3", 3, gates=False)
    v1, v2, v3 = (reg.register(r, "support") for r in (r1, r2, bad))
    assert [v["version"] for v in (v1, v2, v3)] == [1, 2, 3]
    assert (v1["gate_status"], v3["gate_status"]) == ("passed", "failed")
    assert v1["data_sha256"]["train"] and v1["recipe_sha256"] == r1.manifest()["recipe_sha256"]
    assert v2["metrics"]["task.tuned.fact_accuracy"] == pytest.approx(0.7)
    assert reg.register(r1, "support")["version"] == 1, "registering the same run again updates it"
    assert r1.manifest()["registry"]["version"] == 1

    reg.promote("support", 1)
    reg.promote("support", "2")
    assert reg.resolve("support@production")["version"] == 2
    with pytest.raises(RegistryError, match="failed its evaluation gates.*--force"):
        reg.promote("support", 3)
    assert reg.resolve("support@production")["version"] == 2
    reg.promote("support", 3, force=True)
    assert reg.resolve("support@production")["version"] == 3
    assert reg.rollback("support")["version"] == 2
    assert reg.rollback("support")["version"] == 1
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback("support")
    assert reg.current_run_dir("support", "production") == str(r1.path.resolve())
    assert [e["action"] for e in reg.history("support")] == ["promote"] * 3 + ["rollback"] * 2

    d = reg.diff("support@1", "support@2")
    assert d["metrics"]["task.tuned.fact_accuracy"]["delta"] == pytest.approx(0.1)
    assert "train" in d["data_sha256"] and d["fields"]["run_dir"]
    with pytest.raises(RegistryError, match="support@9 is not in the registry"):
        reg.get("support", "9")


def test_unfinished_run_is_refused_and_parent_comes_from_production(tmp_path, tiny_model_dir, reg):
    from tuneforge.run import RunDir

    r1 = fake_run(tmp_path, tiny_model_dir, "support-v1", 1)
    reg.register(r1, "support")
    reg.promote("support", 1)
    r2 = fake_run(tmp_path, tiny_model_dir, "support-v2", 2, gates=None)
    assert record_parent(r2)["version"] == 1  # default path: <output_dir>/registry.sqlite
    assert r2.manifest()["parent"]["run_dir"] == str(r1.path.resolve())
    assert reg.register(r2, "support")["parent"] == "support@1"
    assert reg.get("support", "2")["gate_status"] == "unevaluated"
    RunDir(r2.path).update_manifest(stages={"train": {"status": "running"}})
    with pytest.raises(RegistryError, match="not a finished run"):
        reg.register(r2, "support")


def test_cli(tmp_path, tiny_model_dir):
    from tuneforge.cli import app

    path = str(tmp_path / "reg.sqlite")
    r1 = fake_run(tmp_path, tiny_model_dir, "a1", 1)
    r2 = fake_run(tmp_path, tiny_model_dir, "a2", 2, gates=False)
    cli = CliRunner()
    for r in (r1, r2):
        res = cli.invoke(app, ["registry", "register", str(r.path), "--name", "bot", "--registry", path])
        assert res.exit_code == 0, res.output
    assert "bot@2" in res.output and "failed" in res.output
    out = cli.invoke(app, ["registry", "list", "--registry", path, "--json"])
    assert [r["version"] for r in json.loads(out.output)] == [1, 2]
    assert cli.invoke(app, ["registry", "promote", "bot", "1", "--registry", path]).exit_code == 0
    refused = cli.invoke(app, ["registry", "promote", "bot", "2", "--registry", path])
    assert refused.exit_code == 2 and "--force" in refused.output
    assert cli.invoke(app, ["registry", "promote", "bot", "2", "--force", "--registry", path]).exit_code == 0
    back = cli.invoke(app, ["registry", "rollback", "bot", "--registry", path])
    assert back.exit_code == 0 and "version 1" in back.output
    show = cli.invoke(app, ["registry", "show", "bot@production", "--registry", path])
    assert json.loads(show.output)["version"] == 1
    diff = cli.invoke(app, ["registry", "diff", "bot@1", "bot@2", "--registry", path, "--json"])
    assert json.loads(diff.output)["fields"]["gate_status"] == ["passed", "failed"]
    missing = cli.invoke(app, ["registry", "list", "--registry", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 2 and "no registry" in missing.output
