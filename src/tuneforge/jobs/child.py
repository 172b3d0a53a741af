"""One job's training, in a process of its own.

    tokens = run_training(job, name, cfg, overrides, check=lambda: worker.check(job), log=print)

The worker (worker.py) keeps the job: its lease and heartbeat, its status, its result and
serving it. Everything that touches torch (`prepare_stage`, then the objective's `train`) runs
here, in a process started per job with multiprocessing's "spawn" method: a fresh interpreter,
so nothing the server does to torch's process-wide state (a seeded request's `torch.manual_seed`,
thread counts) reaches training, and nothing training does reaches serving. Spawn, not fork: the
server holds torch's threads, an event loop and locks that a forked copy would inherit
half-taken. The price is importing torch and transformers again per job (seconds), small next to
any fine-tuning job.

The child writes the job's events and checkpoint rows into jobs.db itself, naming the job's
fencing token (SQLite in WAL mode takes writers from many processes, store.py): clients see them
as they happen, nothing is lost in a pipe should the worker die, and a child whose job was
cancelled or taken over has its writes refused exactly as an in-process trainer's were. Two
one-way pipes carry the rest:

    worker → child   a stop reason ("stopping", "cancelled", "lost"); the pipe closing means the
                     worker is gone (killed): the child stops too, as "lost" (it will be taken over)
    child → worker   ("step", n) after each step, then one outcome: ("done", trained tokens),
                     ("aborted", reason, step) or ("error", "Type: message", the data at fault?)

The child stops at its next step when told, or when its own look at the job row finds it
cancelled or taken over. A child that has not stopped `stop_grace_s` after being told (a long
step, a hang) is terminated: SIGTERM, then SIGKILL. A child that ends without an outcome (killed,
crashed, out of memory) raises `TrainingDied` naming its exit status, and the worker retries it.

Signals sent to the worker's whole process group are the worker's to act on: Ctrl-C (SIGINT) is
ignored here, and a SIGTERM the worker did not send (systemd stopping the service's cgroup, an
operator's `kill`) stops training at the next step as "terminated", which hands the job back
without using up an attempt, as a worker's shutdown does; a second SIGTERM ends it at once.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

from .spec import JobsConfig
from .store import Store

CHECK_S = 0.5  # the worker looks at the job (cancelled, lease) at least this often while it trains
TERM_S = 5.0  # after SIGTERM, how long a training process has before SIGKILL


class JobAborted(Exception):
    """Stops a job's training: it was cancelled, its lease was lost, or the worker is shutting down."""

    def __init__(self, reason: str, step: int = 0):
        super().__init__(reason)
        self.reason, self.step = reason, step


class TrainingFailed(Exception):
    """Training raised in the job's process: "Type: message", and whether the data was at fault."""

    def __init__(self, message: str, data_error: bool):
        super().__init__(message)
        self.message, self.data_error = message, data_error


class TrainingDied(Exception):
    """The job's process ended without an outcome: killed by a signal, crashed, or exited."""


def stop_reason(store: Store, job: dict) -> Optional[str]:
    """None while the job is still this holder's (its token, an active status); else why not:
    "cancelled" (the job was cancelled while this holder had it) or "lost" (taken over, finished)."""
    if store.owns(job["id"], job["token"]):
        return None
    row = store.get_job(job["id"]) or {}
    mine = row.get("token") == job["token"]
    return "cancelled" if mine and row.get("status") == "cancelled" else "lost"


def exit_reason(code: Optional[int]) -> str:
    """What a training process's exit status says, for the job's events and error."""
    if code is None:
        return "the training process did not end, even when killed"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "an unknown signal"
        why = ": killed, e.g. out of memory or by an operator" if -code == signal.SIGKILL else ""
        return f"the training process exited with signal {-code} ({name}{why})"
    return f"the training process exited with code {code} without a result (its output is in the worker's log)"


# ------------------------------------------------------------------ the worker's side
def run_training(
    job: dict,
    name: str,
    cfg: JobsConfig,
    overrides: tuple,
    check: Callable[[], None],
    log: Callable[[str], Any],
) -> Optional[int]:
    """Train claimed `job` in a process of its own and wait for it; the trained tokens.

    Meanwhile `check()` is called every heartbeat (at most `CHECK_S`); once it raises JobAborted
    (the worker stopping, the job cancelled, its lease lost) the child is told to stop. Raises
    JobAborted (stopped), TrainingFailed (training raised) or TrainingDied (no outcome).
    """
    ctx = multiprocessing.get_context("spawn")
    ctl_r, ctl_w = ctx.Pipe(duplex=False)
    out_r, out_w = ctx.Pipe(duplex=False)
    # daemon: should the worker exit without ending it, multiprocessing's exit handler SIGTERMs it
    proc = ctx.Process(
        target=main,
        args=(job, name, str(cfg.db_path), tuple(overrides), ctl_r, out_w),
        name=f"tuneforge-{job['id']}",
        daemon=True,
    )
    try:
        proc.start()
    except BaseException:  # cannot start one (out of processes, memory): the job fails with the reason
        for conn in (ctl_r, ctl_w, out_r, out_w):
            conn.close()
        raise
    ctl_r.close()  # the child's ends: once it exits, out_r reads EOF
    out_w.close()
    log(f"{job['id']}: training in process {proc.pid}")
    w = _Watch(job["id"], cfg, ctl_w, out_r, check, log)
    try:
        w.run()
    finally:  # whatever ended the wait (Ctrl-C too), the process never outlives it
        _end(proc, w.wait_s)
        ctl_w.close()
        out_r.close()
    if w.outcome is None:
        if w.asked is not None:
            raise JobAborted(w.asked, w.step)
        if proc.exitcode == -signal.SIGTERM:  # before it could stop politely: still a polite stop
            raise JobAborted("terminated", w.step)
        raise TrainingDied(exit_reason(proc.exitcode))
    kind, *rest = w.outcome
    if kind == "done":
        return rest[0]
    if kind == "aborted":
        raise JobAborted(w.asked or rest[0], rest[1])
    raise TrainingFailed(rest[0], rest[1])


class _Watch:
    """The worker's wait on a training process: its messages, and a look at the job every `every_s`."""

    def __init__(self, jid: str, cfg: JobsConfig, ctl: Any, out: Any, check: Callable[[], None], log: Callable):
        self.jid, self.grace_s, self.ctl, self.out, self.check, self.log = jid, cfg.stop_grace_s, ctl, out, check, log
        self.every_s = min(cfg.heartbeat_s, CHECK_S)
        self.step, self.outcome, self.asked, self.asked_at = 0, None, None, 0.0
        self.wait_s: Optional[float] = None  # how long the process may take to exit; None: kill it now

    def run(self) -> None:
        next_look = time.monotonic() + self.every_s
        while True:
            if self.out.poll(max(0.0, next_look - time.monotonic())):
                try:
                    msg = self.out.recv()
                except EOFError:  # gone without an outcome; its exit status says why
                    self.wait_s = TERM_S
                    return
                if msg[0] != "step":
                    self.outcome, self.wait_s = msg, self.grace_s  # it exits by itself now
                    return
                self.step = msg[1]
            now = time.monotonic()
            if now < next_look:
                continue
            next_look = now + self.every_s
            if self.asked is None:
                self.look(now)
            elif now - self.asked_at > self.grace_s:
                self.log(f"{self.jid}: training did not stop within {self.grace_s:g} s ({self.asked}); ending it")
                self.wait_s = 0.0  # SIGTERM, which ends a process already told to stop at once
                return

    def look(self, now: float) -> None:
        try:
            self.check()
        except JobAborted as exc:
            self.asked, self.asked_at = exc.reason, now
            with contextlib.suppress(OSError):
                self.ctl.send(exc.reason)
        except Exception as exc:  # a locked database for a moment: the next look will do
            self.log(f"{self.jid}: checking the job failed: {type(exc).__name__}: {exc}")


def _end(proc: Any, wait_s: Optional[float]) -> None:
    """Let `proc` exit within `wait_s`, then SIGTERM it, then SIGKILL it; `wait_s` None: SIGKILL it
    now (the worker is going down: Ctrl-C, an error; the checkpoints it wrote are verified on resume)."""
    if wait_s is not None:
        proc.join(wait_s)
        if proc.exitcode is None:
            proc.terminate()
            proc.join(TERM_S)
    if proc.exitcode is None:
        proc.kill()
        proc.join(TERM_S)


# ------------------------------------------------------------------ the training process
class _Control:
    """The child's view of whether to go on: the worker's word (a reason on the pipe, or the pipe
    closing) and the job's row; and its line back to the worker."""

    def __init__(self, store: Store, job: dict, ctl: Any, out: Any):
        self.store, self.job, self.out = store, job, out
        self.told: Optional[str] = None
        threading.Thread(target=self._listen, args=(ctl,), daemon=True, name="job-control").start()

    def terminated(self, signum: int, frame: Any) -> None:
        """SIGTERM: stop at the next step; once already told to stop (the worker's own SIGTERM after
        the grace, or a second one), at once."""
        if self.told is not None:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        self.told = "terminated"

    def _listen(self, ctl: Any) -> None:
        try:
            self.told = ctl.recv()
        except (EOFError, OSError):  # the worker is gone: its lease runs out, the job will be taken over
            self.told = "lost"

    def send(self, msg: tuple) -> None:
        with contextlib.suppress(OSError):  # the worker is gone: nobody to tell
            self.out.send(msg)

    def check(self, step: Optional[int] = None) -> None:
        """Raise JobAborted when the worker said stop, or the job is no longer this holder's."""
        if step is not None:
            self.send(("step", step))
        reason = self.told or stop_reason(self.store, self.job)
        if reason is not None:
            raise JobAborted(reason, step or 0)


class JobCallback(TrainerCallback):
    """Events for logged metrics, a row per checkpoint, and the stop check each step."""

    def __init__(self, store: Store, job: dict, name: str, check: Callable[[Optional[int]], None]):
        self.store, self.job, self.name, self.check = store, job, name, check
        self.token = job["token"]
        self.tokens: Optional[int] = None
        self.step = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        step, total = state.global_step, state.max_steps
        if "loss" in logs:
            data = {
                "step": step,
                "total_steps": total,
                "train_loss": logs["loss"],
                "learning_rate": logs.get("learning_rate"),
                "epoch": round(state.epoch or 0, 4),
            }
            self.store.add_event(
                self.job["id"],
                f"Step {step}/{total}: training loss={logs['loss']:.4f}",
                type="metrics",
                data=data,
                token=self.token,
            )
        if "eval_loss" in logs:
            self.store.add_event(
                self.job["id"],
                f"Step {step}/{total}: validation loss={logs['eval_loss']:.4f}",
                type="metrics",
                data={"step": step, "total_steps": total, "valid_loss": logs["eval_loss"]},
                token=self.token,
            )

    def on_save(self, args, state, control, **kwargs):
        step = state.global_step
        metrics: dict[str, Any] = {}
        for h in reversed(state.log_history):
            if "loss" in h and "train_loss" not in metrics:
                metrics["train_loss"] = h["loss"]
            if "eval_loss" in h and "valid_loss" not in metrics:
                metrics["valid_loss"] = h["eval_loss"]
        path = Path(args.output_dir) / f"checkpoint-{step}"
        jid = self.job["id"]
        if self.store.add_checkpoint(jid, step, f"{self.name}:ckpt-step-{step}", str(path), metrics, self.token):
            self.store.add_event(jid, f"Checkpoint created at step {step}", data={"step": step}, token=self.token)

    def on_step_end(self, args, state, control, **kwargs):
        self.step = state.global_step
        self.check(self.step)

    def on_train_end(self, args, state, control, **kwargs):
        self.tokens = state.num_input_tokens_seen  # restored from the checkpoint on resume: all attempts


def train_job(store: Store, job: dict, overrides: tuple, check: Callable[[], None], cb: JobCallback) -> dict:
    """Prepare the job's run directory (unless resuming from a checkpoint) and train it; the train summary."""
    from ..pipeline import prepare_stage
    from ..recipe import apply_overrides, recipe_from_dict
    from ..run import RunDir
    from ..train.dispatch import train_run
    from ..train.trainer import last_checkpoint

    jid, token = job["id"], job["token"]
    run = RunDir(job["run_dir"])
    prepared = run.exists() and run.manifest().get("stages", {}).get("prepare", {}).get("status") == "done"
    ckpt = last_checkpoint(str(run.checkpoints_dir)) if job["resume"] and prepared else None
    if ckpt is None:
        recipe = recipe_from_dict(apply_overrides(job["recipe"], list(overrides)), f"job {jid}")
        store.add_event(jid, "Preparing data", token=token)
        check()  # the run directory is wiped next: only while the job is still this worker's
        run, card = prepare_stage(recipe, overwrite=True)
        rows = ", ".join(f"{s}: {v['rows']}" for s, v in card["splits"].items() if v["rows"])
        store.add_event(
            jid,
            f"Data prepared ({rows} examples)",
            data={"splits": {s: v["rows"] for s, v in card["splits"].items()}},
            token=token,
        )
        check()
        # the pid: which process to look at (or kill) on the worker's machine
        store.add_event(jid, "Fine-tuning job started", data={"pid": os.getpid()}, token=token)
    else:
        step = int(ckpt.rsplit("-", 1)[-1])
        store.add_event(
            jid,
            f"Resuming from the checkpoint at step {step} (attempt {job['attempts']})",
            data={"step": step, "attempt": job["attempts"], "pid": os.getpid()},
            token=token,
        )
    return train_run(run, resume=ckpt is not None, callbacks=[cb])


def main(job: dict, name: str, db_path: str, overrides: tuple, ctl: Any, out: Any) -> None:
    """The training process (what `spawn` runs): train the job, then send the worker its outcome."""
    from ..data.load import DataFileError
    from ..data.validate import DataValidationError

    # Ctrl-C reaches the worker's whole process group: the worker decides (it hands the job back
    # and ends this process), so an interrupt here never races it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    store = Store(db_path)
    control = _Control(store, job, ctl, out)
    signal.signal(signal.SIGTERM, control.terminated)
    cb = JobCallback(store, job, name, control.check)
    try:
        info = train_job(store, job, overrides, control.check, cb)
        outcome: tuple = ("done", cb.tokens or info.get("tokens_seen"))
    except JobAborted as exc:
        outcome = ("aborted", exc.reason, cb.step)
    except Exception as exc:  # the message, not the traceback: it is the job's error, read by its user
        outcome = ("error", f"{type(exc).__name__}: {exc}", isinstance(exc, (DataValidationError, DataFileError)))
    control.send(outcome)
