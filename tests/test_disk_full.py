"""A real full disk (a size-limited tmpfs) during checkpointing and export: a loud error naming the
path, and the previous checkpoint / export left whole."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import ROOT, tiny_recipe, write_jsonl


def _mount(path, size_kb: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        why = f"cannot mount a tmpfs here ({res.stderr.decode().strip() or 'not root'})"
        if os.environ.get("CI"):
            pytest.fail(why + " — CI runs as root and must run this test")
        pytest.skip(why)


@pytest.fixture
def small_disk():
    mounted = []

    def mount(path, size_kb):
        _mount(path, size_kb)
        mounted.append(path)
        return path

    yield mount
    for p in mounted:
        subprocess.run(["umount", "-l", str(p)], check=False)


@pytest.fixture
def files(tmp_path):
    rows = [json.loads(l) for l in (ROOT / "examples/demo/train.jsonl").read_text().splitlines()][:24]
    test = [json.loads(l) for l in (ROOT / "examples/demo/test.jsonl").read_text().splitlines()][:4]
    return {"train": write_jsonl(tmp_path / "train.jsonl", rows), "test": write_jsonl(tmp_path / "test.jsonl", test)}


def _checkpoint_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, tiny_model_dir, files, small_disk):
    from typer.testing import CliRunner

    from tuneforge.cli import app
    from tuneforge.pipeline import prepare_stage
    from tuneforge.train import checkpoint as ck
    from tuneforge.train.dispatch import train_run

    training = {
        "max_steps": 4,
        "save_strategy": "steps",
        "save_steps": 1,
        "eval_strategy": "no",
        "batch_size": 4,
        "threads": 1,
        "save_total_limit": 3,
    }
    probe, _ = prepare_stage(
        tiny_recipe(tmp_path, tiny_model_dir, files, name="probe", training={**training, "max_steps": 1})
    )
    train_run(probe)
    size = _checkpoint_bytes(probe.checkpoints_dir / "checkpoint-1")
    run, _ = prepare_stage(tiny_recipe(tmp_path, tiny_model_dir, files, name="full", training=training))
    small_disk(run.checkpoints_dir, size * 3 // 2 // 1024 + 8)  # room for one checkpoint, not two
    from tuneforge.io import DiskFullError

    with pytest.raises(DiskFullError) as exc:
        train_run(run)
    assert "disk full while writing checkpoint-" in str(exc.value) and str(run.checkpoints_dir) in str(exc.value)
    assert "resume from checkpoint-" in str(exc.value)
    newest = ck.newest_verified(run.checkpoints_dir)
    assert newest is not None and ck.problem(newest) is None  # the previous checkpoint is whole
    assert run.manifest()["stages"]["train"]["status"] == "failed"
    res = CliRunner().invoke(app, ["train", str(run.path), "--resume"])
    assert res.exit_code == 2 and "disk full while writing" in res.output and "Traceback" not in res.output, res.output


def test_disk_full_during_export_keeps_the_previous_export(tmp_path, tiny_model_dir, files, small_disk):
    from tuneforge.deploy.export import export
    from tuneforge.pipeline import prepare_stage
    from tuneforge.train.dispatch import train_run

    run, _ = prepare_stage(
        tiny_recipe(
            tmp_path,
            tiny_model_dir,
            files,
            name="exp",
            training={"max_steps": 2, "eval_strategy": "no", "threads": 1},
            export={"formats": ["adapter"]},
        )
    )
    train_run(run)
    adapter_bytes = sum(p.stat().st_size for p in run.adapter_dir.rglob("*") if p.is_file())
    small_disk(run.export_dir, adapter_bytes * 3 // 1024 + 64)  # the adapter fits, a merged model does not
    export(run, formats=["adapter"])
    before = {p.name: p.read_bytes() for p in (run.export_dir / "adapter").iterdir() if p.is_file()}
    from tuneforge.io import DiskFullError

    with pytest.raises(DiskFullError, match="disk full while writing the export under") as exc:
        export(run, formats=["adapter", "merged"])
    assert str(run.export_dir) in str(exc.value)
    after = {p.name: p.read_bytes() for p in (run.export_dir / "adapter").iterdir() if p.is_file()}
    assert after == before  # the earlier export is untouched
    assert not (run.export_dir / "merged").exists()  # nothing half-written under a final name
