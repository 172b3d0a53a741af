"""The jobs worker: takes queued jobs one at a time and runs each through the pipeline's stages.

    worker = Worker(JobsConfig(root="tuneforge-jobs"))
    worker.run_forever()            # `tuneforge jobs worker`; the server runs one in a thread (`serve --jobs`)

A job runs as an ordinary run directory (`<root>/runs/<job id>`): `prepare_stage` then the
objective's `train` (dispatch), exactly as `tuneforge run` does, with a Trainer callback that
records metrics events and checkpoints and stops the job once it is cancelled.

A worker that dies (killed, machine restarted) leaves its job `running`. The next worker
to look sees that the owner's process is gone (same host) or that its heartbeat stopped
(`stale_after_s`), re-queues the job and resumes it from its last complete checkpoint
(`train(run, resume=True)`); after `max_attempts` runs it is failed with the reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

from ..io import atomic_write_text
from .service import validate_job
from .spec import JobsConfig, model_name
from .store import Store, new_id, worker_id


class JobAborted(Exception):
    """Raised inside training to stop a job: it was cancelled, or the worker is shutting down."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class JobCallback(TrainerCallback):
    """Events for logged metrics, a row per checkpoint, and the cancellation check each step."""

    def __init__(self, worker: Worker, job: dict, name: str):
        self.worker, self.job, self.name = worker, job, name
        self.store = worker.store
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
                self.job["id"], f"Step {step}/{total}: training loss={logs['loss']:.4f}", type="metrics", data=data
            )
        if "eval_loss" in logs:
            self.store.add_event(
                self.job["id"],
                f"Step {step}/{total}: validation loss={logs['eval_loss']:.4f}",
                type="metrics",
                data={"step": step, "total_steps": total, "valid_loss": logs["eval_loss"]},
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
        self.store.add_checkpoint(self.job["id"], step, f"{self.name}:ckpt-step-{step}", str(path), metrics)
        self.store.add_event(self.job["id"], f"Checkpoint created at step {step}", data={"step": step})

    def on_step_end(self, args, state, control, **kwargs):
        self.step = state.global_step
        self.worker.check(self.job["id"])

    def on_train_end(self, args, state, control, **kwargs):
        self.tokens = state.num_input_tokens_seen  # restored from the checkpoint on resume: all attempts


class _Heartbeat:
    """Says the worker is alive while a job runs, whatever the length of one training step."""

    def __init__(self, store: Store, job_id: str, worker: str, every_s: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(store, job_id, worker, every_s), daemon=True, name=f"heartbeat-{job_id}"
        )

    def _run(self, store: Store, job_id: str, worker: str, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                store.heartbeat(job_id, worker)
            except Exception:  # a locked database for a moment: the next beat will do
                pass

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Worker:
    def __init__(
        self,
        cfg: JobsConfig,
        on_model: Optional[Callable[[str, str], None]] = None,
        overrides: tuple = (),
        log: Callable[[str], Any] = lambda msg: None,
    ):
        """`on_model(name, run_dir)` is called before a job is marked succeeded (the server hot-loads the
        adapter there, so the model answers as soon as the job says `succeeded`). `overrides` are dotted
        recipe keys for this machine (e.g. training.threads=2), applied to the jobs it starts."""
        self.cfg, self.on_model, self.overrides, self.log = cfg, on_model, tuple(overrides), log
        self.store = Store(cfg.db_path)
        self.id = worker_id()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # loop ----------------------------------------------------------------------------
    def run_once(self) -> Optional[dict]:
        """Do one piece of work (a validation or a job); the job row afterwards, None when idle."""
        self.recover()
        job = validate_job(self.store, self.id)  # a validation the API did not get to, or lost in a crash
        if job is not None:
            return job
        job = self.store.claim(self.id)
        return self.run_job(job) if job is not None else None

    def run_forever(self, until_idle: bool = False) -> None:
        while not self._stop.is_set():
            try:
                did = self.run_once()
            except Exception as exc:  # e.g. a locked or unreadable database: log it, keep serving the queue
                self.log(f"jobs worker: {type(exc).__name__}: {exc}")
                did = None
            if did is None:
                if until_idle:
                    return
                self._stop.wait(self.cfg.poll_s)

    def start(self) -> Worker:
        self._thread = threading.Thread(target=self.run_forever, daemon=True, name="tuneforge-jobs-worker")
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the current step; a running job goes back to the queue, to resume from its checkpoint."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def recover(self) -> None:
        for job, what in self.store.recover(self.cfg.stale_after_s, self.cfg.max_attempts):
            self.log(f"{job['id']}: its worker {job['worker']} stopped; {what}")

    def check(self, job_id: str) -> None:
        """Raise JobAborted when the job was cancelled (or taken over) or the worker is stopping."""
        if self._stop.is_set():
            raise JobAborted("stopping")
        if not self.store.owns(job_id, self.id):
            raise JobAborted("cancelled")

    # one job ---------------------------------------------------------------------------
    def run_job(self, job: dict) -> dict:
        from ..data.load import DataFileError
        from ..data.validate import DataValidationError

        jid = job["id"]
        name = model_name(job["model"], job["suffix"], jid)
        self.log(f"{jid}: running (attempt {job['attempts']})")
        cb = JobCallback(self, job, name)
        try:
            with _Heartbeat(self.store, jid, self.id, self.cfg.heartbeat_s):
                info = self._train(job, cb)
        except JobAborted as exc:
            if exc.reason == "cancelled":
                self.store.add_event(jid, f"Training stopped at step {cb.step} (job cancelled)", data={"step": cb.step})
            elif exc.reason == "stopping":
                self.store.update_owned(
                    jid,
                    self.id,
                    status="queued",
                    worker=None,
                    resume=1,
                    events=[("The worker is shutting down; job re-queued to resume from its last checkpoint", "warn")],
                )
            return self.store.get_job(jid)
        except Exception as exc:
            data_error = isinstance(exc, (DataValidationError, DataFileError))
            error = {
                "code": "invalid_training_file" if data_error else "training_failed",
                "param": "training_file" if data_error else None,
                "message": f"{type(exc).__name__}: {exc}",
            }
            self.store.update_owned(
                jid,
                self.id,
                status="failed",
                worker=None,
                error=error,
                finished_at=int(time.time()),
                events=[(f"Fine-tuning job failed: {error['message']}", "error")],
            )
            self.log(f"{jid}: failed: {error['message']}")
            return self.store.get_job(jid)
        except BaseException:  # Ctrl-C / SystemExit: hand the job back before going
            self.store.update_owned(jid, self.id, status="queued", worker=None, resume=1)
            raise
        return self._succeed(job, name, info, cb.tokens)

    def _train(self, job: dict, cb: JobCallback) -> dict:
        from ..pipeline import prepare_stage
        from ..recipe import apply_overrides, recipe_from_dict
        from ..run import RunDir
        from ..train.dispatch import train_run
        from ..train.trainer import last_checkpoint

        jid = job["id"]
        run = RunDir(job["run_dir"])
        prepared = run.exists() and run.manifest().get("stages", {}).get("prepare", {}).get("status") == "done"
        ckpt = last_checkpoint(str(run.checkpoints_dir)) if job["resume"] and prepared else None
        if ckpt is None:
            recipe = recipe_from_dict(apply_overrides(job["recipe"], list(self.overrides)), f"job {jid}")
            self.store.add_event(jid, "Preparing data")
            run, card = prepare_stage(recipe, overwrite=True)
            rows = ", ".join(f"{s}: {v['rows']}" for s, v in card["splits"].items() if v["rows"])
            self.store.add_event(
                jid,
                f"Data prepared ({rows} examples)",
                data={"splits": {s: v["rows"] for s, v in card["splits"].items()}},
            )
            self.check(jid)
            self.store.add_event(jid, "Fine-tuning job started")
        else:
            step = int(ckpt.rsplit("-", 1)[-1])
            self.store.add_event(
                jid,
                f"Resuming from the checkpoint at step {step} (attempt {job['attempts']})",
                data={"step": step, "attempt": job["attempts"]},
            )
        return train_run(run, resume=ckpt is not None, callbacks=[cb])

    def _succeed(self, job: dict, name: str, info: dict, tokens: Optional[int]) -> dict:
        from ..run import RunDir

        jid = job["id"]
        run = RunDir(job["run_dir"])
        results = self._result_file(run)
        from ..registry import maybe_register

        maybe_register(run, log=self.log)  # a version of ft:<base>:<suffix>, with its lineage; never fails the job
        if self.on_model is not None:
            try:  # served before the job says succeeded, so a client polling for it can use it at once
                self.on_model(name, str(run.path))
            except Exception as exc:  # trained fine, but this server cannot serve it: say so, keep the result
                self.store.add_event(jid, f"The model could not be loaded for serving: {exc}", level="warn")
        if self.store.update_owned(
            jid,
            self.id,
            status="succeeded",
            worker=None,
            fine_tuned_model=name,
            finished_at=int(time.time()),
            trained_tokens=tokens or info.get("tokens_seen"),
            result_files=[results] if results else [],
            events=[(f"New fine-tuned model created: {name}", "info"), ("The job has successfully completed", "info")],
        ):
            self.log(f"{jid}: succeeded → {name}")
        return self.store.get_job(jid)

    def _result_file(self, run: Any) -> Optional[str]:
        """The step metrics as a CSV file (OpenAI's `result_files`): step, train_loss, valid_loss, lr."""
        if not run.metrics_file.is_file():
            return None
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["step", "epoch", "train_loss", "valid_loss", "learning_rate"])
        for line in run.metrics_file.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if "loss" in r or "eval_loss" in r:
                    w.writerow(
                        [
                            r.get("step"),
                            r.get("epoch"),
                            r.get("loss", ""),
                            r.get("eval_loss", ""),
                            r.get("learning_rate", ""),
                        ]
                    )
        data = buf.getvalue().encode()
        fid = new_id("file")
        self.cfg.files_dir.mkdir(parents=True, exist_ok=True)
        path = self.cfg.files_dir / f"{fid}.csv"
        atomic_write_text(path, data.decode())
        self.store.add_file(
            fid, "step_metrics.csv", "fine-tune-results", len(data), hashlib.sha256(data).hexdigest(), str(path)
        )
        return fid
