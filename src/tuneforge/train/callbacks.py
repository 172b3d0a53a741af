"""Trainer callbacks shared by all objectives: metrics.jsonl and a run-manifest heartbeat."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from ..dist import is_main_process


class MetricsJsonlCallback(TrainerCallback):
    """Append every log (train loss, eval loss, lr, …) as one JSON line to logs/metrics.jsonl."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.time()
        if not is_main_process():  # only rank 0 logs (see on_log); the others must not truncate its file
            return
        if resume_step and self.path.exists():
            # a crashed run may have logged past its last checkpoint; those steps are redone
            kept = [
                l
                for l in self.path.read_text().splitlines()
                if l.strip() and json.loads(l).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(l + "\n" for l in kept))
        elif not resume_step:
            self.path.write_text("")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), "time": round(time.time() - self._t0, 2)}
        row.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()})
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
