"""Exact resume and crash-safe checkpoints (extends tests/test_pipeline_tiny.py's resume test,
which crashes mid-interval and compares losses + adapter weights).

Here: stopping exactly at N/2 and resuming gives the same data order, losses, adapter
weights, optimiser and scheduler state as N straight steps; without the saved RNG state
it would not (dropout > 0); and a crash — an exception or a SIGKILL — while checkpoint N
is being written leaves checkpoint N/2 whole, no half-written `checkpoint-N`, and
`--resume` continues from N/2 to the same result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT, tiny_recipe, write_jsonl
from safetensors.torch import load_file

from tuneforge.lm import collator as collator_mod
from tuneforge.pipeline import prepare_stage
from tuneforge.train.checkpoint import write_manifest
from tuneforge.train.trainer import STAGING, ResumeError, TuneforgeTrainer, last_checkpoint

N = 8
HALF = N // 2
TRAINING = {
    "max_steps": N,
    "save_strategy": "steps",
    "save_steps": HALF,
    "eval_strategy": "no",
    "learning_rate": 0.005,
    "batch_size": 4,
    "threads": 1,
    "save_total_limit": 3,
}


@pytest.fixture(autouse=True)
def _restore_threads():
    """training.threads=1 sets torch's global thread count; give later tests their cores back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume-data")
    rows = [json.loads(l) for l in (ROOT / "examples/demo/train.jsonl").read_text().splitlines()][:48]
    test = [json.loads(l) for l in (ROOT / "examples/demo/test.jsonl").read_text().splitlines()][:4]
    return d, {"train": write_jsonl(d / "train.jsonl", rows), "test": write_jsonl(d / "test.jsonl", test)}


def _recording(seen: list):
    """A PadCollator.__call__ that records every batch as token ids (the data order the trainer sees)."""
    real = collator_mod.PadCollator.__call__

    def record(self, features):
        seen.append([list(f["input_ids"]) for f in features])
        return real(self, features)

    return record


@pytest.fixture
def batches(monkeypatch):
    seen: list = []
    monkeypatch.setattr(collator_mod.PadCollator, "__call__", _recording(seen))
    return seen


def _run(files, model_dir, name):
    d, f = files
    # dropout > 0: the resumed half only matches if the RNG streams are restored too
    run, _ = prepare_stage(tiny_recipe(d, model_dir, f, name=name, training=TRAINING, strategy={"dropout": 0.1}))
    return run


def _losses(run) -> dict[int, float]:
    rows = [json.loads(l) for l in run.metrics_file.read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _stop_after_save(step):
    from transformers import TrainerCallback

    class StopAfterSave(TrainerCallback):  # the process "ends" right after checkpoint-<step> is complete
        def on_save(self, args, state, control, **kw):
            if state.global_step == step:
                raise _Stop(f"stopped after checkpoint-{step}")

    return StopAfterSave()


@pytest.fixture(scope="module")
def straight(files, tiny_model_dir):
    """N steps without interruption: the reference, with the batches it saw."""
    from tuneforge.train.sft import train

    seen: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(collator_mod.PadCollator, "__call__", _recording(seen))
        run = _run(files, tiny_model_dir, "straight")
        train(run)
    return run, seen


def _assert_same_result(run, ref):
    assert _losses(run) == _losses(ref)  # bitwise-equal floats, every step 1..N
    wa = load_file(ref.adapter_dir / "adapter_model.safetensors")
    wb = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_half_plus_resume_plus_half_is_bitwise_equal(files, tiny_model_dir, straight, batches):
    from tuneforge.train.sft import train

    ref, ref_batches = straight
    run = _run(files, tiny_model_dir, "halves")
    with pytest.raises(_Stop):
        train(run, callbacks=[_stop_after_save(HALF)])
    first = list(batches)
    batches.clear()
    info = train(run, resume=True)
    assert info["resumed_from"].endswith(f"checkpoint-{HALF}") and info["steps_this_session"] == HALF

    # data order: steps 1..N/2 before the stop, N/2+1..N after it, as in the straight run
    # (the loader may fetch one batch ahead, so compare the first N/2 of each session)
    assert first[:HALF] == ref_batches[:HALF]
    assert batches[:HALF] == ref_batches[HALF:N]
    _assert_same_result(run, ref)
    # optimiser (AdamW moments, step counts) and scheduler state at step N are identical too
    opt_a = torch.load(ref.checkpoints_dir / f"checkpoint-{N}" / "optimizer.pt", weights_only=True)
    opt_b = torch.load(run.checkpoints_dir / f"checkpoint-{N}" / "optimizer.pt", weights_only=True)
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for i, st in opt_a["state"].items():
        assert all(torch.equal(st[k], opt_b["state"][i][k]) for k in st)
    sch_a = torch.load(ref.checkpoints_dir / f"checkpoint-{N}" / "scheduler.pt", weights_only=True)
    sch_b = torch.load(run.checkpoints_dir / f"checkpoint-{N}" / "scheduler.pt", weights_only=True)
    assert sch_a == sch_b


def test_without_saved_rng_state_the_resume_differs(files, tiny_model_dir, straight):
    """Control for the test above: the equality really depends on restoring the RNG state."""
    from tuneforge.train.sft import train

    ref, _ = straight
    run = _run(files, tiny_model_dir, "no-rng")
    with pytest.raises(_Stop):
        train(run, callbacks=[_stop_after_save(HALF)])
    ckpt = run.checkpoints_dir / f"checkpoint-{HALF}"
    (ckpt / "rng_state.pth").unlink()
    with pytest.raises(ResumeError):  # a checkpoint without its RNG state is not resumed silently
        train(run, resume=True)
    # another checkpoint's (valid) RNG state, re-verified: the resume runs, with other dropout masks
    import shutil

    shutil.copy(ref.checkpoints_dir / f"checkpoint-{N}" / "rng_state.pth", ckpt / "rng_state.pth")
    write_manifest(ckpt)
    train(run, resume=True)
    la, lb = _losses(ref), _losses(run)
    assert all(la[s] == lb[s] for s in range(1, HALF + 1))
    assert any(la[s] != lb[s] for s in range(HALF + 1, N + 1))  # other dropout masks after the resume


def _assert_previous_checkpoint_survives(run, killed: bool = True):
    ckpts = run.checkpoints_dir
    assert not (ckpts / f"checkpoint-{N}").exists()  # never a half-written checkpoint under its final name
    if killed:  # the crash was mid-save (an exception clears the staging folder itself)
        assert (ckpts / STAGING / f"checkpoint-{N}" / "adapter_model.safetensors").is_file()
    assert last_checkpoint(str(ckpts)) == str(ckpts / f"checkpoint-{HALF}")
    # the previous checkpoint loads: weights, optimiser, scheduler, RNG, trainer state
    prev = ckpts / f"checkpoint-{HALF}"
    assert load_file(prev / "adapter_model.safetensors")
    torch.load(prev / "optimizer.pt", weights_only=True)
    torch.load(prev / "scheduler.pt", weights_only=True)
    torch.load(prev / "rng_state.pth", weights_only=False)
    assert json.loads((prev / "trainer_state.json").read_text())["global_step"] == HALF


def test_exception_while_writing_checkpoint_keeps_previous(files, tiny_model_dir, straight, monkeypatch):
    from tuneforge.train.sft import train

    ref, _ = straight
    run = _run(files, tiny_model_dir, "save-raises")
    real = TuneforgeTrainer._save_optimizer_and_scheduler

    def failing(self, output_dir):  # the weights of checkpoint-N are already written; the optimizer is not
        if self.state.global_step == N:
            raise OSError("No space left on device (simulated)")
        return real(self, output_dir)

    monkeypatch.setattr(TuneforgeTrainer, "_save_optimizer_and_scheduler", failing)
    with pytest.raises(OSError, match="simulated"):
        train(run)
    monkeypatch.undo()
    assert run.manifest()["stages"]["train"]["status"] == "failed"
    assert not run.adapter_dir.exists()
    _assert_previous_checkpoint_survives(run, killed=False)

    info = train(run, resume=True)
    assert info["resumed_from"].endswith(f"checkpoint-{HALF}")
    _assert_same_result(run, ref)
    assert not (run.checkpoints_dir / STAGING).exists()  # the stale staging was cleared by the next save


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    from tuneforge.run import RunDir
    from tuneforge.train.sft import train

    real_save = torch.save

    def save(obj, f, *a, **k):
        # SIGKILL half-way through writing optimizer.pt of checkpoint-{n}: no exception handler,
        # no finally block runs, the file is left truncated in the staging folder
        if str(f).endswith("optimizer.pt") and "checkpoint-{n}" in str(f):
            with open(f, "wb") as fh:
                fh.write(b"PK" + b"\\0" * 1000)
                fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *a, **k)

    torch.save = save
    train(RunDir(sys.argv[1]))
""")


def test_sigkill_while_writing_checkpoint_then_resume(files, tiny_model_dir, straight):
    from tuneforge.train.sft import train

    ref, _ = straight
    run = _run(files, tiny_model_dir, "killed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT.format(n=N), str(run.path)],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (run.checkpoints_dir / STAGING / f"checkpoint-{N}" / "optimizer.pt").stat().st_size < 2000
    assert run.manifest()["stages"]["train"]["status"] == "running"  # killed: nothing recorded the end
    _assert_previous_checkpoint_survives(run)

    info = train(run, resume=True)
    assert info["resumed_from"].endswith(f"checkpoint-{HALF}")
    _assert_same_result(run, ref)
    assert run.manifest()["stages"]["train"]["status"] == "done"
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == [f"checkpoint-{HALF}", f"checkpoint-{N}"]
