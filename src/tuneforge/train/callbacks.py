"""Trainer callbacks shared by all objectives: metrics.jsonl, and per-step timing (the time estimate)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from transformers import TrainerCallback

from ..dist import is_main_process
from ..errors import TuneforgeError
from ..io import atomic_write_text


def metrics_rows(text: str, source: str = "logs/metrics.jsonl") -> list[dict]:
    r"""The rows of a metrics.jsonl text. A last line without its newline that is not JSON is a
    row being written (or whose writer was killed): left out. Any other bad line is an error.

    >>> metrics_rows('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    [{'step': 1}, {'step': 2}]
    >>> metrics_rows('{"step": 1}\n{"st\n{"step": 3}\n')
    Traceback (most recent call last):
    ...
    tuneforge.train.callbacks.MetricsFileError: logs/metrics.jsonl line 2 is not a JSON object: '{"st' — fix or delete the line
    """
    *complete, tail = text.split("\n")  # a text that ends with a newline has an empty tail
    rows = []
    for i, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise MetricsFileError(f"{source} line {i} is not a JSON object: {line[:80]!r} — fix or delete the line")
        rows.append(row)
    if tail.strip():
        with contextlib.suppress(json.JSONDecodeError):
            row = json.loads(tail)
            if isinstance(row, dict):
                rows.append(row)
    return rows


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl file (see `metrics_rows`: a torn last line is left out)."""
    return metrics_rows(Path(path).read_text(encoding="utf-8"), str(path))


class MetricsFileError(TuneforgeError, ValueError):
    pass


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
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif not resume_step:
            self.path.write_text("")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), "time": round(time.time() - self._t0, 2)}
        row.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()})
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


class StepTimer(TrainerCallback):
    """Wall time and real tokens of every optimiser step: forward, backward, clipping, optimiser and
    scheduler (the next batches are fetched before a step begins). The time estimate measures a
    step with it, and tests compare that with training's own steps."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self._t0 = 0.0
        self._n0 = 0

    @staticmethod
    def _sync(args) -> None:
        import torch

        if args.device.type == "cuda":
            torch.cuda.synchronize(args.device)  # CUDA runs asynchronously: time the work, not the launch

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync(args)
        self._t0, self._n0 = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        self._sync(args)
        self.seconds.append(time.perf_counter() - self._t0)
        self.tokens.append(state.num_input_tokens_seen - self._n0)
