"""Each job trains in a process of its own (jobs/child.py): the worker's (the server's) torch state
never reaches training; a training process that is killed never leaves its job `running`, and one
that does not stop when told is ended; an error raised in it reaches the job as its message."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from .conftest import running, wait_until

pytestmark = pytest.mark.timeout(150)


def _events(store, jid: str) -> list[dict]:
    return list(reversed(store.list_events(jid, None, 1000)[0]))  # oldest first


def _pids(store, jid: str) -> list[int]:
    """The training processes' pids, as each reported its own (os.getpid()) when it started training."""
    return [e["data"]["pid"] for e in _events(store, jid) if (e["data"] or {}).get("pid")]


def _losses(store, jid: str) -> list[tuple[int, float]]:
    return [(e["data"]["step"], e["data"]["train_loss"]) for e in _events(store, jid) if e["type"] == "metrics"]


def _in_thread(worker) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("job", worker.run_once()), daemon=True)
    thread.start()
    return thread, out


def test_a_job_trains_in_its_own_process_and_the_servers_seeding_does_not_reach_it(jobs_cfg, new_job):
    import torch

    from tuneforge.jobs.store import Store
    from tuneforge.jobs.worker import Worker

    # LoRA dropout draws on torch's RNG every step, the shuffle of 2 epochs at each epoch: a reseed
    # of a shared generator mid-training would change the losses
    overrides = ("strategy.dropout=0.2",)
    store = Store(jobs_cfg.db_path)
    quiet = new_job(16, seed=3, n_epochs=2, batch_size=2)
    assert Worker(jobs_cfg, overrides=overrides).run_once()["status"] == "succeeded"

    noisy = new_job(16, seed=3, n_epochs=2, batch_size=2)
    stop, seeds = threading.Event(), [0]

    def reseed() -> None:  # what the server does for each request with a `seed`, while a job trains
        while not stop.is_set():
            seeds[0] += 1
            torch.manual_seed(seeds[0])
            stop.wait(0.001)

    thread = threading.Thread(target=reseed, daemon=True)
    thread.start()
    try:
        done = Worker(jobs_cfg, overrides=overrides).run_once()
    finally:
        stop.set()
        thread.join()
    assert done["id"] == noisy and done["status"] == "succeeded", done["error"]
    assert seeds[0] > 100  # reseeded all along
    losses = _losses(store, quiet)
    assert len(losses) == 16  # 16 rows / batch 2 × 2 epochs
    assert _losses(store, noisy) == losses  # to the last bit
    for jid in (quiet, noisy):
        [pid] = _pids(store, jid)
        assert pid != os.getpid() and not running(pid)  # trained elsewhere, and that process has ended


def test_a_killed_training_process_is_resumed_then_failed_naming_the_signal(jobs_cfg, new_job):
    """SIGTERM (systemd stopping the service's whole cgroup) hands the job back without using up an
    attempt; SIGKILL (the out-of-memory killer) uses one: resumed from the checkpoint, then failed."""
    from tuneforge.jobs.store import Store
    from tuneforge.jobs.worker import Worker

    cfg = dataclasses.replace(jobs_cfg, max_attempts=2)
    jid = new_job(48, n_epochs=2, batch_size=1)  # 96 steps, a checkpoint every 2
    store = Store(cfg.db_path)
    worker = Worker(cfg)
    for n, (sig, attempts) in enumerate([(signal.SIGTERM, 0), (signal.SIGKILL, 1), (signal.SIGKILL, 2)]):
        seen = len(store.list_checkpoints(jid, None, 1000)[0])
        thread, out = _in_thread(worker)
        pid = wait_until(lambda: _pids(store, jid)[n:], "the training process")[0]  # noqa: B023
        wait_until(lambda: len(store.list_checkpoints(jid, None, 1000)[0]) > seen, "a checkpoint")  # noqa: B023
        os.kill(pid, sig)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the worker did not notice its training process ended"
        row = out["job"]
        assert row["worker"] is None and row["attempts"] == attempts and not running(pid)
        last = [e["message"] for e in _events(store, jid) if e["level"] != "info"][-1]
        if n == 0:
            assert row["status"] == "queued" and row["resume"] == 1
            assert (
                last == "The training process was stopped (SIGTERM); job re-queued to resume from its last checkpoint"
            )
        elif n == 1:  # retried: queued again, to resume from the checkpoint, the attempt counted
            assert row["status"] == "queued" and row["resume"] == 1
            assert last.startswith("The training process exited with signal 9 (SIGKILL")
            assert last.endswith("job re-queued to resume from its last checkpoint (attempt 1 of 2)")
    assert row["status"] == "failed" and row["error"]["code"] == "training_process_died"
    assert row["error"]["message"].startswith("the training process exited with signal 9 (SIGKILL")
    assert row["error"]["message"].endswith("giving up after 2 attempt(s)")
    messages = [e["message"] for e in _events(store, jid)]
    assert messages.count("Preparing data") == 1
    resumed = [m.rsplit(" ", 2)[1:] for m in messages if m.startswith("Resuming from the checkpoint at step")]
    assert resumed == [["(attempt", "1)"], ["(attempt", "2)"]]
    assert worker.run_once() is None  # failed for good: not picked up again


def _stop_outside_a_write(pid: int, db_path) -> None:
    """SIGSTOP the training process at a moment it holds no SQLite write lock (its event and
    checkpoint writes are milliseconds long; stopped inside one, every writer would wait on it,
    which is not the hang under test: a step that never ends)."""
    import sqlite3

    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)
        db = sqlite3.connect(str(db_path), timeout=0.2, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # stopped mid-write: let it finish, stop it again
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            db.close()
    raise AssertionError("the training process always held the jobs database's write lock")


def test_a_cancelled_job_whose_training_process_hangs_is_killed_after_the_grace(jobs_cfg, new_job):
    from tuneforge.jobs.store import Store
    from tuneforge.jobs.worker import Worker

    cfg = dataclasses.replace(jobs_cfg, stop_grace_s=1.0)
    jid = new_job(48, n_epochs=20, batch_size=1)  # far longer than the test
    store = Store(cfg.db_path)
    thread, out = _in_thread(Worker(cfg))
    [pid] = wait_until(lambda: _pids(store, jid), "the training process")
    wait_until(lambda: _losses(store, jid), "training steps")
    _stop_outside_a_write(pid, cfg.db_path)  # a step that never ends: it cannot see it was told to stop
    try:
        assert store.cancel(jid)
        thread.join(timeout=30)  # 1 s grace, SIGTERM (held while it is stopped), 5 s, SIGKILL
    finally:
        if running(pid):
            os.kill(pid, signal.SIGCONT)
    assert not thread.is_alive(), "the worker waited on its hung training process"
    assert out["job"]["status"] == "cancelled" and not running(pid)
    [stopped] = [e for e in _events(store, jid) if e["message"].startswith("Training stopped at step")]
    assert stopped["message"].endswith("(job cancelled)")
    assert stopped["data"]["step"] >= max(s for s, _ in _losses(store, jid))


def test_an_error_in_the_training_process_fails_the_job_with_its_message(jobs_cfg, new_job):
    from tuneforge.jobs.store import Store
    from tuneforge.jobs.worker import Worker

    jid = new_job(8)
    store = Store(jobs_cfg.db_path)
    # the file changes after it was checked (a disk fault, a hand edit): the data stage refuses it
    path = Path(store.get_file(store.get_job(jid)["training_file"])["path"])
    path.write_text(path.read_text() + json.dumps({"messages": [{"role": "robot", "content": "beep"}]}) + "\n")
    done = Worker(jobs_cfg).run_once()
    assert done["status"] == "failed" and done["worker"] is None
    error = done["error"]
    assert error["code"] == "invalid_training_file" and error["param"] == "training_file"
    assert error["message"].startswith("DataValidationError: ") and "line 9" in error["message"]
    assert "Traceback" not in error["message"]
    assert [e["level"] for e in _events(store, jid)][-1] == "error"
