"""Scale-out: the same run under `accelerate launch` with 2 CPU processes (gloo) trains like one
process with the same global batch, and only rank 0 writes the run directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, tiny_recipe, write_jsonl
from safetensors.torch import load_file

from tuneforge.pipeline import prepare_stage

DDP_CONFIG = ROOT / "recipes" / "accelerate" / "ddp-cpu.yaml"
PER_PROCESS_BATCH = 4
STEPS = 4


@pytest.fixture(autouse=True)
def _restore_threads():
    """training.threads=1 sets torch's global thread count; give later tests their cores back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recipe(tmp_path, model_dir, files, name, batch_size):
    # group_by_length off: the length-grouped sampler builds its mega-batches from the per-process
    # batch size, so 2 x 4 and 1 x 8 would see different examples; the random sampler gives both
    # the same order, which accelerate then deals out batch by batch (rank 0 the first 4, rank 1
    # the next 4). Dropout off: each process draws its own masks.
    return tiny_recipe(
        tmp_path,
        model_dir,
        files,
        name=name,
        training={
            "max_steps": STEPS,
            "batch_size": batch_size,
            "group_by_length": False,
            "threads": 1,
            "eval_strategy": "no",
            "save_strategy": "steps",
            "save_steps": 2,
            "learning_rate": 0.01,
        },
        strategy={"dropout": 0.0},
    )


def _losses(run) -> dict[int, float]:
    rows = [json.loads(l) for l in run.metrics_file.read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_two_cpu_processes_match_one_process_with_same_global_batch(tmp_path, tiny_model_dir):
    from tuneforge.train.sft import train

    rows = [json.loads(l) for l in (ROOT / "examples/demo/train.jsonl").read_text().splitlines()][:48]
    test = [json.loads(l) for l in (ROOT / "examples/demo/test.jsonl").read_text().splitlines()][:4]
    files = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "test": write_jsonl(tmp_path / "test.jsonl", test)}
    single, _ = prepare_stage(_recipe(tmp_path, tiny_model_dir, files, "single", 2 * PER_PROCESS_BATCH))
    ddp, _ = prepare_stage(_recipe(tmp_path, tiny_model_dir, files, "ddp", PER_PROCESS_BATCH))

    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(DDP_CONFIG),
        "--main_process_port",
        str(_free_port()),
        "-m",
        "tuneforge.cli",
        "train",
        str(ddp.path),
    ]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info_single = train(single)

    # the manifest records how the run was distributed
    dist = ddp.manifest()["stages"]["train"]["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo" and dist["global_batch_size"] == 8
    assert ddp.manifest()["stages"]["train"]["status"] == "done"
    # tokens are summed over both processes: the same examples as the single process saw
    assert ddp.manifest()["stages"]["train"]["tokens_seen"] == info_single["tokens_seen"]

    # The loss is the token mean over the global batch in both set-ups (each process divides its
    # summed loss by the token count gathered from all processes; DDP averages the gradients).
    # Exact equality is not expected: the single process sums the batch's gradients inside one
    # matmul, DDP sums two half-batch gradients in a gloo all-reduce, and the logged loss is
    # a mean of two per-process values — the same numbers added in another order, so the float32
    # results differ in the last bits (and those differences grow a little with every step).
    ls, ld = _losses(single), _losses(ddp)
    assert sorted(ld) == sorted(ls) == list(range(1, STEPS + 1))
    for step in ls:
        assert ld[step] == pytest.approx(ls[step], rel=1e-4, abs=1e-5), (step, ld[step], ls[step])
    assert ls[STEPS] < ls[1]  # and it trained
    ws = load_file(single.adapter_dir / "adapter_model.safetensors")
    wd = load_file(ddp.adapter_dir / "adapter_model.safetensors")
    assert ws.keys() == wd.keys()
    for k in ws:
        # Elementwise closeness is too strict for weights: Adam divides by sqrt(v) + eps, so where
        # a gradient is ~0 (LoRA A starts with B = 0) last-bit noise becomes an lr-sized step.
        # The tensors as a whole still agree to ~1e-4 relative.
        rel = ((wd[k] - ws[k]).norm() / ws[k].norm()).item()
        assert rel < 1e-3, (k, rel)

    # only rank 0 wrote: one TensorBoard event file, each step logged once, checkpoints complete
    # with both processes' RNG states (resume restores each rank's dropout/sampling stream)
    assert len(list((ddp.logs_dir / "tensorboard").iterdir())) == 1
    steps_logged = [json.loads(l)["step"] for l in ddp.metrics_file.read_text().splitlines() if '"loss"' in l]
    assert steps_logged == list(range(1, STEPS + 1))
    ckpts = sorted(p.name for p in ddp.checkpoints_dir.iterdir())
    assert ckpts == ["checkpoint-2", "checkpoint-4"]  # no .staging left behind
    for c in ckpts:
        names = {p.name for p in (ddp.checkpoints_dir / c).iterdir()}
        assert {"rng_state_0.pth", "rng_state_1.pth", "optimizer.pt", "trainer_state.json"} <= names
    assert not [p for p in ddp.path.iterdir() if p.name.startswith(".")]  # no leftover staging folders


def test_rank_helpers_read_the_launcher_environment(monkeypatch):
    import doctest

    from tuneforge import dist as distributed

    assert doctest.testmod(distributed).failed == 0
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.world_rank() == 1 and distributed.world_size() == 2 and not distributed.is_main_process()
    monkeypatch.delenv("RANK")
    assert distributed.is_main_process()


def test_non_main_rank_never_writes_the_manifest(tmp_path, tiny_model_dir, monkeypatch):
    rows = [json.loads(l) for l in (ROOT / "examples/demo/train.jsonl").read_text().splitlines()][:12]
    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", rows),
        "test": write_jsonl(tmp_path / "test.jsonl", rows[:2]),
    }
    run, _ = prepare_stage(_recipe(tmp_path, tiny_model_dir, files, "ranks", 4))
    before = run.manifest_file.read_bytes()
    monkeypatch.setenv("RANK", "1")
    returned = run.update_manifest(status="written-by-rank-1")
    assert returned["status"] == "written-by-rank-1" and run.manifest_file.read_bytes() == before


def test_cli_accelerate_config_builds_the_launch_and_checks_the_file(tmp_path):
    from typer.testing import CliRunner

    from tuneforge.cli import app
    from tuneforge.train.distributed import launch_command

    cmd = launch_command(DDP_CONFIG, Path("runs/x"), resume=True)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and cmd[-4:] == [
        "tuneforge.cli",
        "train",
        "runs/x",
        "--resume",
    ]
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "recipe.yaml").write_text("{}")
    res = CliRunner().invoke(app, ["train", str(tmp_path), "--accelerate-config", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "accelerate config not found" in res.output


def test_own_loop_objectives_refuse_a_multi_process_launch(tmp_path, monkeypatch):
    from tuneforge.recipe import recipe_from_dict
    from tuneforge.run import RunDir
    from tuneforge.train.dispatch import train_run
    from tuneforge.train.distributed import DistributedError

    run = RunDir.create(
        recipe_from_dict(
            {"name": "ppo", "output_dir": str(tmp_path), "objective": {"kind": "ppo", "reward_functions": ["brevity"]}}
        )
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match="as one process"):
        train_run(run)
