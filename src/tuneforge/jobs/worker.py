"""The jobs worker: takes queued jobs one at a time and runs each through the pipeline's stages.

    worker = Worker(JobsConfig(root="tuneforge-jobs"))
    worker.run_forever()            # `tuneforge jobs worker`; the server runs one in a thread (`serve --jobs`)

A job runs as an ordinary run directory (`<root>/runs/<job id>`): `prepare_stage` then the
objective's `train` (dispatch), exactly as `tuneforge run` does, with a Trainer callback that
records metrics events and checkpoints and stops the job once it is cancelled.

A worker holds its job under a lease of `stale_after_s` that its heartbeat (every
`heartbeat_s`) extends, and names the job's fencing token in every write (store.py). A worker
that dies (killed, machine restarted) leaves its job `running`; once the lease has run out,
the next worker to look re-queues the job and resumes it from its last complete checkpoint
(`train(run, resume=True)`); after `max_attempts` runs it is failed with the reason. A worker
that stops on purpose (shutdown, Ctrl-C) hands its job back at once, without using up an attempt.
A worker whose lease ran out or was taken over stops at its next step without writing anything.
"""

from __future__ import annotations

import csv
import hashlib
import io
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
        self.store, self.token = worker.store, job["token"]
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
        self.worker.check(self.job)

    def on_train_end(self, args, state, control, **kwargs):
        self.tokens = state.num_input_tokens_seen  # restored from the checkpoint on resume: all attempts


class _Heartbeat:
    """Extends the job's lease while it runs, whatever the length of one training step, and knows
    when the lease is lost: refused (the job was taken over or cancelled) or run out by this clock
    (heartbeats failed for a whole lease; another worker may take the job any moment)."""

    def __init__(self, store: Store, job: dict, every_s: float, lease_s: float):
        self.lost = threading.Event()
        self.until = float(job["lease_until"] or 0)  # as `claim` set it
        self._store, self._job_id, self._token = store, job["id"], job["token"]
        self._every_s, self._lease_s = every_s, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{job['id']}")

    def _beat(self) -> Optional[bool]:
        """One heartbeat: True when the lease was extended, False when refused, None when the database failed."""
        try:
            until = self._store.heartbeat(self._job_id, self._token, self._lease_s)
        except Exception:  # a locked database for a moment: the next beat will do, within the lease
            return None
        if until is None:
            self.lost.set()
            return False
        self.until = until
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            if self._beat() is False:
                return

    def held(self) -> bool:
        return not self.lost.is_set() and time.time() < self.until

    def renew(self) -> bool:
        """Extend the lease now, when the beats did not get through in time. Safe however late: a
        takeover changes the token, so this succeeds only while nobody has taken the job."""
        return not self.lost.is_set() and self._beat() is True

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
        self._beat: Optional[_Heartbeat] = None  # the lease of the job running now

    # loop ----------------------------------------------------------------------------
    def run_once(self) -> Optional[dict]:
        """Do one piece of work (a validation or a job); the job row afterwards, None when idle."""
        self.recover()
        # a validation the API did not get to, or lost in a crash
        job = validate_job(self.store, self.id, lease_s=self.cfg.stale_after_s)
        if job is not None:
            return job
        job = self.store.claim(self.id, lease_s=self.cfg.stale_after_s)
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
        for job, what in self.store.recover(self.cfg.max_attempts):
            self.log(f"{job['id']}: its worker {job['worker']} stopped (lease expired); {what}")

    def check(self, job: dict) -> None:
        """Raise JobAborted when the worker is stopping, the job was cancelled, or its lease is lost:
        taken over (the token changed), or run out by this clock without a heartbeat getting through
        and not renewable now (then another worker may already be preparing the same run directory)."""
        if self._stop.is_set():
            raise JobAborted("stopping")
        beat = self._beat
        held = beat is None or beat.held() or beat.renew()
        if held and self.store.owns(job["id"], job["token"]):
            return
        row = self.store.get_job(job["id"]) or {}
        mine = row.get("token") == job["token"]
        raise JobAborted("cancelled" if mine and row.get("status") == "cancelled" else "lost")

    # one job ---------------------------------------------------------------------------
    def run_job(self, job: dict) -> dict:
        """Train a claimed job and record how it ended; the job row afterwards."""
        jid, token = job["id"], job["token"]
        name = model_name(job["model"], job["suffix"], jid)
        self.log(f"{jid}: running (attempt {job['attempts']})")
        cb = JobCallback(self, job, name)
        self._beat = _Heartbeat(self.store, job, self.cfg.heartbeat_s, self.cfg.stale_after_s)
        trained = False
        try:
            with self._beat:  # held until the result is recorded: serving it may take a while
                info = self._train(job, cb)
                trained = True
                self._succeed(job, name, info, cb.tokens)
        except JobAborted as exc:
            self._aborted(job, exc.reason, cb.step)
        except Exception as exc:
            self._fail(job, exc, trained)
        except BaseException:  # Ctrl-C / SystemExit: hand the job back before going
            self.store.requeue(
                jid, token, "The worker was interrupted; job re-queued to resume from its last checkpoint"
            )
            raise
        finally:
            self._beat = None
        return self.store.get_job(jid)

    def _aborted(self, job: dict, reason: str, step: int) -> None:
        jid = job["id"]
        if reason == "cancelled":
            self.store.add_event(
                jid, f"Training stopped at step {step} (job cancelled)", data={"step": step}, token=job["token"]
            )
        elif reason == "stopping":
            self.store.requeue(
                jid, job["token"], "The worker is shutting down; job re-queued to resume from its last checkpoint"
            )
        else:  # the job is someone else's now: write nothing, not even an event
            self.log(f"{jid}: stopped at step {step}: this worker's lease on the job ended (taken over or expired)")

    def _fail(self, job: dict, exc: Exception, trained: bool) -> None:
        from ..data.load import DataFileError
        from ..data.validate import DataValidationError

        jid = job["id"]
        data_error = isinstance(exc, (DataValidationError, DataFileError))
        error = {
            "code": "invalid_training_file" if data_error else "training_failed",
            "param": "training_file" if data_error else None,
            "message": ("training finished, but recording its result failed: " if trained else "")
            + f"{type(exc).__name__}: {exc}",
        }
        self.store.update_owned(
            jid,
            job["token"],
            status="failed",
            worker=None,
            lease_until=None,
            error=error,
            finished_at=int(time.time()),
            events=[(f"Fine-tuning job failed: {error['message']}", "error")],
        )
        self.log(f"{jid}: failed: {error['message']}")

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
            self.store.add_event(jid, "Preparing data", token=job["token"])
            self.check(job)  # the run directory is wiped next: only while the lease is held
            run, card = prepare_stage(recipe, overwrite=True)
            rows = ", ".join(f"{s}: {v['rows']}" for s, v in card["splits"].items() if v["rows"])
            self.store.add_event(
                jid,
                f"Data prepared ({rows} examples)",
                data={"splits": {s: v["rows"] for s, v in card["splits"].items()}},
                token=job["token"],
            )
            self.check(job)
            self.store.add_event(jid, "Fine-tuning job started", token=job["token"])
        else:
            step = int(ckpt.rsplit("-", 1)[-1])
            self.store.add_event(
                jid,
                f"Resuming from the checkpoint at step {step} (attempt {job['attempts']})",
                data={"step": step, "attempt": job["attempts"]},
                token=job["token"],
            )
        return train_run(run, resume=ckpt is not None, callbacks=[cb])

    def _succeed(self, job: dict, name: str, info: dict, tokens: Optional[int]) -> None:
        """Record a trained job as succeeded. What follows training (the result file, the registry,
        loading the model for serving) cannot undo it: a failure there is a warning event on the job."""
        from ..registry import maybe_register
        from ..run import RunDir

        jid, token = job["id"], job["token"]
        run = RunDir(job["run_dir"])

        def warn(what: str, exc: Exception) -> None:
            self.store.add_event(jid, f"{what}: {type(exc).__name__}: {exc}", level="warn", token=token)
            self.log(f"{jid}: {what}: {exc}")

        results = None
        try:
            results = self._result_file(run)
        except Exception as exc:
            warn("The step metrics could not be written as a result file", exc)
        try:
            maybe_register(run, log=self.log)  # a version of ft:<base>:<suffix>, with its lineage
        except Exception as exc:
            warn("The model could not be registered", exc)
        if self.on_model is not None:
            try:  # served before the job says succeeded, so a client polling for it can use it at once
                self.on_model(name, str(run.path))
            except Exception as exc:  # trained fine, but this server cannot serve it: say so, keep the result
                warn("The model could not be loaded for serving", exc)
        if self.store.update_owned(
            jid,
            token,
            status="succeeded",
            worker=None,
            lease_until=None,
            fine_tuned_model=name,
            finished_at=int(time.time()),
            trained_tokens=tokens or info.get("tokens_seen"),
            result_files=[results] if results else [],
            events=[(f"New fine-tuned model created: {name}", "info"), ("The job has successfully completed", "info")],
        ):
            self.log(f"{jid}: succeeded → {name}")
        else:
            self.log(f"{jid}: trained, but the job is no longer this worker's (cancelled or taken over)")

    def _result_file(self, run: Any) -> Optional[str]:
        """The step metrics as a CSV file (OpenAI's `result_files`): step, train_loss, valid_loss, lr."""
        from ..train.callbacks import read_metrics  # a torn last line (killed mid-append) is left out

        if not run.metrics_file.is_file():
            return None
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["step", "epoch", "train_loss", "valid_loss", "learning_rate"])
        for r in read_metrics(run.metrics_file):
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
