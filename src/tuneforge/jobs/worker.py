"""The jobs worker: takes queued jobs one at a time and runs each through the pipeline's stages.

    worker = Worker(JobsConfig(root="tuneforge-jobs"))
    worker.run_forever()            # `tuneforge jobs worker`; the server runs one in a thread (`serve --jobs`)

A job runs as an ordinary run directory (`<root>/runs/<job id>`): `prepare_stage` then the
objective's `train` (dispatch), exactly as `tuneforge run` does, with a Trainer callback that
records metrics events and checkpoints and stops the job once it is cancelled. Training runs in a
process of its own per job (child.py), so the server's torch state (seeds, threads) and the job's
never mix; this worker keeps the lease, the job's status and its result, and hot-loads it
(`on_model`) here, where the serving engine is. A training process that dies (SIGKILL, a crash,
out of memory) is retried like a dead worker: resumed from its checkpoint until `max_attempts`.

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
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

from ..io import atomic_write_text
from .child import JobAborted, TrainingDied, TrainingFailed, run_training, stop_reason
from .service import validate_job
from .spec import JobsConfig, model_name
from .store import Store, new_id, worker_id


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
        if multiprocessing.current_process().daemon:  # fail here, not on every job it would claim
            raise RuntimeError(
                "a jobs worker cannot run in a daemonic multiprocessing process: it starts a process per "
                "job to train in, and daemonic processes may not have children"
            )
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
        reason = stop_reason(self.store, job)
        if held and reason is None:
            return
        raise JobAborted(reason or "lost")

    # one job ---------------------------------------------------------------------------
    def run_job(self, job: dict) -> dict:
        """Train a claimed job (in a process of its own) and record how it ended; the job row afterwards."""
        jid, token = job["id"], job["token"]
        name = model_name(job["model"], job["suffix"], jid)
        self.log(f"{jid}: running (attempt {job['attempts']})")
        self._beat = _Heartbeat(self.store, job, self.cfg.heartbeat_s, self.cfg.stale_after_s)
        trained = False
        try:
            with self._beat:  # held until the result is recorded: serving it may take a while
                tokens = run_training(job, name, self.cfg, self.overrides, lambda: self.check(job), self.log)
                trained = True
                self._succeed(job, name, tokens)
        except JobAborted as exc:
            self._aborted(job, exc.reason, exc.step)
        except TrainingFailed as exc:  # raised in the training process: its message, as the job's error
            self._fail(job, exc.message, *(("invalid_training_file", "training_file") if exc.data_error else ()))
        except TrainingDied as exc:
            self._died(job, str(exc))
        except Exception as exc:
            done = "training finished, but recording its result failed: " if trained else ""
            self._fail(job, f"{done}{type(exc).__name__}: {exc}")
        except BaseException:  # Ctrl-C / SystemExit: the training process is ended; hand the job back
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
        elif reason in ("stopping", "terminated"):  # a polite stop, not a crash: no attempt used up
            why = (
                "The worker is shutting down" if reason == "stopping" else "The training process was stopped (SIGTERM)"
            )
            self.store.requeue(jid, job["token"], f"{why}; job re-queued to resume from its last checkpoint")
        else:  # the job is someone else's now: write nothing, not even an event
            self.log(f"{jid}: stopped at step {step}: this worker's lease on the job ended (taken over or expired)")

    def _fail(self, job: dict, message: str, code: str = "training_failed", param: Optional[str] = None) -> None:
        jid = job["id"]
        error = {"code": code, "param": param, "message": message}
        self.store.update_owned(
            jid,
            job["token"],
            status="failed",
            worker=None,
            lease_until=None,
            error=error,
            finished_at=int(time.time()),
            events=[(f"Fine-tuning job failed: {message}", "error")],
        )
        self.log(f"{jid}: failed: {message}")

    def _died(self, job: dict, reason: str) -> None:
        """The training process ended without an outcome (killed, crashed, out of memory): as for a
        worker that died, the job resumes from its last checkpoint, the attempt counted, until it has
        used `max_attempts` (an out-of-memory kill on every attempt must end, with the reason)."""
        jid, n, most = job["id"], job["attempts"], self.cfg.max_attempts
        if n >= most:
            self._fail(job, f"{reason}; giving up after {n} attempt(s)", "training_process_died")
            return
        message = f"{reason[0].upper()}{reason[1:]}; job re-queued to resume from its last checkpoint"
        if self.store.update_owned(
            jid,
            job["token"],
            status="queued",
            worker=None,
            lease_until=None,
            resume=1,
            events=[(f"{message} (attempt {n} of {most})", "warn")],
        ):
            self.log(f"{jid}: {message}")

    def _succeed(self, job: dict, name: str, tokens: Optional[int]) -> None:
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
            trained_tokens=tokens,
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
