"""Pick the trainer module for a run's `objective.kind`: one module per objective.

Every module exposes `train(run, resume=False, callbacks=None) -> dict` (the summary
that goes into the manifest's train stage), so the CLI and the pipeline never need to
know which objective they run.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..run import RunDir

OBJECTIVE_MODULES = {
    "sft": "sft",
    "pretrain": "pretrain",
    "dpo": "dpo",
    "kto": "kto",
    "orpo": "orpo",
    "reward": "reward",
    "ppo": "ppo",
    "grpo": "grpo",
}


def train_run(run: RunDir, resume: bool = False, callbacks: list | None = None) -> dict[str, Any]:
    """Train `run` with the trainer of its recipe's objective."""
    kind = run.require().recipe().objective.kind
    from ..dist import world_size
    from .distributed import SINGLE_PROCESS_OBJECTIVES, DistributedError

    if kind in SINGLE_PROCESS_OBJECTIVES and world_size() > 1:
        raise DistributedError(
            f"objective.kind={kind} trains in its own loop without gradient sync: run "
            f"`tuneforge train {run.path}` as one process, not under accelerate launch/torchrun"
        )
    module = importlib.import_module(f"tuneforge.train.{OBJECTIVE_MODULES[kind]}")
    return module.train(run, resume=resume, callbacks=callbacks)
