"""Checkpoints verify themselves: a manifest of every file is written last, resume checks it and
falls back to the newest whole checkpoint (and says so); SIGKILL at random moments, damaged
files and a full disk never leave a run without a loadable checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import ROOT, tiny_recipe, write_jsonl
from safetensors.torch import load_file

from tuneforge.pipeline import prepare_stage
from tuneforge.train import checkpoint as ck

N = 8
TRAINING = {
    "max_steps": N,
    "save_strategy": "steps",
    "save_steps": 1,  # a checkpoint every step: most of a step's time is spent writing one
    "eval_strategy": "no",
    "learning_rate": 0.005,
    "batch_size": 4,
    "threads": 1,
    "save_total_limit": 2,
}
# bounded in `make test`; `make test-reliability` runs the full loop (TUNEFORGE_KILLS=50)
KILLS = int(os.environ.get("TUNEFORGE_KILLS", "4"))


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt-data")
    rows = [json.loads(l) for l in (ROOT / "examples/demo/train.jsonl").read_text().splitlines()][:48]
    test = [json.loads(l) for l in (ROOT / "examples/demo/test.jsonl").read_text().splitlines()][:4]
    return d, {"train": write_jsonl(d / "train.jsonl", rows), "test": write_jsonl(d / "test.jsonl", test)}


def _run(files, model_dir, name, **training):
    d, f = files
    recipe = tiny_recipe(d, model_dir, f, name=name, training={**TRAINING, **training}, strategy={"dropout": 0.1})
    return prepare_stage(recipe)[0]


def _losses(run) -> dict[int, float]:
    rows = [json.loads(l) for l in run.metrics_file.read_text().splitlines() if l.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def straight(files, tiny_model_dir):
    from tuneforge.train.dispatch import train_run

    run = _run(files, tiny_model_dir, "straight")
    train_run(run)
    return run


def _same_result(run, ref) -> None:
    assert _losses(run) == _losses(ref)  # bitwise-equal losses, every step
    a = load_file(ref.adapter_dir / "adapter_model.safetensors")
    b = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_checkpoint_carries_a_manifest_that_verifies(straight):
    found = ck.candidates(straight.checkpoints_dir)
    assert [ck.step_of(p) for p in found] == [N, N - 1]  # save_total_limit=2
    for folder in found:
        assert ck.problem(folder) is None
        listed = json.loads((folder / ck.MANIFEST).read_text())["files"]
        assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= set(listed)


@pytest.mark.parametrize(
    "damage,needle",
    [
        (
            lambda d: (d / "adapter_model.safetensors").write_bytes(
                (d / "adapter_model.safetensors").read_bytes()[:100]
            ),
            "truncated",
        ),
        (lambda d: (d / "optimizer.pt").unlink(), "optimizer.pt: missing"),
        (
            lambda d: (d / "trainer_state.json").write_text(
                "{" + " " * (len((d / "trainer_state.json").read_text()) - 1)
            ),
            "corrupted",
        ),
        (lambda d: (d / ck.MANIFEST).write_text("{not json"), "unreadable manifest"),
    ],
    ids=["truncated-weights", "missing-optimizer", "corrupted-json", "corrupted-manifest"],
)
def test_a_damaged_newest_checkpoint_is_named_and_resume_falls_back(files, tiny_model_dir, straight, damage, needle):
    from tuneforge.train.dispatch import train_run

    run = _run(files, tiny_model_dir, "damaged")
    shutil.rmtree(run.checkpoints_dir, ignore_errors=True)
    shutil.copytree(straight.checkpoints_dir, run.checkpoints_dir)  # checkpoints N-1 and N
    newest = run.checkpoints_dir / f"checkpoint-{N}"
    damage(newest)
    assert needle in ck.problem(newest)
    warnings: list[str] = []
    assert ck.newest_verified(run.checkpoints_dir, warnings.append) == str(run.checkpoints_dir / f"checkpoint-{N - 1}")
    assert len(warnings) == 1 and f"checkpoint-{N}" in warnings[0] and needle in warnings[0]
    # the trainer resumes from the verified one and says why it skipped the newest
    run.metrics_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(straight.metrics_file, run.metrics_file)
    info = train_run(run, resume=True)
    assert info["resumed_from"].endswith(f"checkpoint-{N - 1}")
    assert any(f"checkpoint-{N}" in w for w in info.get("resume_warnings", [])), info
    _same_result(run, straight)


CHAIN = textwrap.dedent("""
    import sys
    from transformers import TrainerCallback
    from tuneforge.run import RunDir
    from tuneforge.train.dispatch import train_run

    class Saved(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            print("step", state.global_step, flush=True)

    train_run(RunDir(sys.argv[1]), resume=sys.argv[2] == "1", callbacks=[Saved()])
    print("done", flush=True)
""")


@pytest.mark.reliability
def test_sigkill_at_random_moments_always_leaves_a_whole_checkpoint(files, tiny_model_dir, straight):
    """Kill -9 a training process at a random moment (mostly inside a checkpoint write: one is written
    every step), resume, kill again, ...: after every kill the newest whole checkpoint verifies and
    loads, and the finished run is bitwise the uninterrupted one."""
    run = _run(files, tiny_model_dir, "killed", max_steps=N + 4 * KILLS)
    ref = _run(files, tiny_model_dir, "killed-ref", max_steps=N + 4 * KILLS)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    rng = random.Random(1234)
    kills, resume = 0, "0"
    while kills < KILLS:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHAIN, str(run.path), resume],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # kill at a random step, at a random moment inside it (most of a step is its checkpoint write)
        target, seen, line = rng.randint(1, 4), 0, "x"
        while seen < target and line:
            line = proc.stdout.readline()  # other lines (the trainer's log dicts) are skipped
            seen += line.startswith("step ")
            if line.startswith("done"):
                break
        if seen < target:  # finished before the chosen moment
            _, err = proc.communicate()
            assert proc.returncode == 0, err[-3000:]
            break
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        newest = ck.newest_verified(run.checkpoints_dir)
        if newest is not None:
            resume = "1"
            assert ck.problem(newest) is None
            assert load_file(os.path.join(newest, "adapter_model.safetensors"))
            torch.load(os.path.join(newest, "optimizer.pt"), weights_only=True)
    from tuneforge.train.dispatch import train_run

    train_run(run, resume=resume == "1")
    train_run(ref)
    assert kills == KILLS
    _same_result(run, ref)
