"""Multi-process training: who writes the run directory, and what the processes share.

tuneforge never starts processes itself for training: `accelerate launch` (or `torchrun`,
`deepspeed`) starts one process per device and each runs the same `tuneforge train RUN`.
Every process trains, but the run directory has one writer, the global rank-0 process
(manifest, metrics.jsonl, TensorBoard, the adapter/model folder); the others only read
it. Collective steps (gathering ZeRO-3/FSDP shards, summing token counts) are run by
every process, so these helpers are called on every rank; the result is saved the same way
by `train/fit.py`'s `save_result` (shards gathered on every rank, rank 0 writes).

The launchers export RANK/WORLD_SIZE before Python starts, so the rank is known before
any process group or Trainer exists (the run directory is touched before both).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import TuneforgeError

# Objectives whose training loop is tuneforge's own (not the HF Trainer): nothing syncs their
# gradients across processes, so N launched copies would train N unrelated models into one run.
SINGLE_PROCESS_OBJECTIVES = frozenset({"ppo"})


class DistributedError(TuneforgeError, RuntimeError):
    """A run cannot train under the multi-process launch it was started with."""


def sum_over_processes(trainer: Any, value: int) -> int:
    """Sum an integer over all processes (e.g. tokens each rank saw); collective."""
    if trainer.args.world_size <= 1:
        return int(value)
    import torch

    total = trainer.accelerator.reduce(torch.tensor([int(value)], device=trainer.args.device), reduction="sum")
    return int(total.item())


def process_info(trainer: Any) -> dict[str, Any]:
    """How the run was distributed, for the manifest (lineage of the numbers in it)."""
    import torch.distributed as dist

    state = trainer.accelerator.state
    return {
        "world_size": trainer.args.world_size,
        # torchrun (and accelerate's launchers built on it) export the processes per machine
        "num_machines": max(
            1, trainer.args.world_size // int(os.environ.get("LOCAL_WORLD_SIZE") or trainer.args.world_size)
        ),
        "distributed_type": str(state.distributed_type).split(".")[-1],
        "backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
        "global_batch_size": trainer.args.per_device_train_batch_size
        * trainer.args.gradient_accumulation_steps
        * trainer.args.world_size,
    }


def launch_command(config_file: Path, run_dir: Path, resume: bool = False, extra: list[str] | None = None) -> list[str]:
    """The `accelerate launch` command line that trains `run_dir` with an accelerate config.

    >>> launch_command(Path("recipes/accelerate/ddp-cpu.yaml"), Path("runs/demo"))[3:6]
    ['--config_file', 'recipes/accelerate/ddp-cpu.yaml', '-m']
    """
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config_file),
        *(extra or []),
        "-m",
        "tuneforge.cli",
        "train",
        str(run_dir),
    ]
    return cmd + (["--resume"] if resume else [])


def launch(config_file: Path, run_dir: Path, resume: bool = False) -> int:
    """Run `accelerate launch` for `run_dir` and return its exit code."""
    if not Path(config_file).is_file():
        raise FileNotFoundError(
            f"{config_file}: accelerate config not found — see recipes/accelerate/ for shipped ones"
        )
    return subprocess.run(launch_command(config_file, run_dir, resume), check=False).returncode
