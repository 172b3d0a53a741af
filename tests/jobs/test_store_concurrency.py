"""Concurrent writers on the jobs store (jobs.db), in threads and in processes, as the API, several
`tuneforge jobs worker` processes and their heartbeat threads use it: no row is lost, no job is
claimed twice, and "database is locked" never reaches the caller, also while several processes
create the same jobs.db at the same moment."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import traceback

import pytest

pytestmark = pytest.mark.timeout(90)
CTX = multiprocessing.get_context("fork")
JOBS = 24


def _in_processes(n: int, target, args_of) -> list:
    """target(*args_of(i), start) in n forked processes sharing the barrier `start`; their results."""
    start, results = CTX.Barrier(n, timeout=60), CTX.Queue()

    def main(i: int) -> None:
        try:
            results.put(target(*args_of(i), start))
        except BaseException:
            start.abort()
            results.put(traceback.format_exc())

    procs = [CTX.Process(target=main, args=(i,), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=80) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    errors = sorted((o for o in out if isinstance(o, str)), key=lambda e: "BrokenBarrierError" in e)
    assert not errors, errors[0]
    return out


def _job(i: int) -> dict:
    return {
        "id": f"ftjob-{i:024d}",
        "status": "queued",
        "model": "tiny",
        "base_path": "x",
        "training_file": "file-1",
        "method": {"type": "supervised"},
        "hyperparameters": {},
        "recipe": {},
        "seed": 1,
        "run_dir": f"runs/{i}",
    }


def _open_each_round(paths: list, who: str, start) -> int:
    from tuneforge.jobs.store import Store

    for path in paths:
        start.wait()  # every process creates the same new jobs.db at the same moment
        store = Store(path)
        for i in range(5):
            store.add_event("ftjob-x", f"{who} {i}")
    return 0


def test_a_jobs_db_created_by_many_processes_at_once(tmp_path):
    n, rounds = 6, 20
    paths = [str(tmp_path / f"jobs-{r}.db") for r in range(rounds)]
    _in_processes(n, _open_each_round, lambda i: (paths, f"p{i}"))
    for p in paths:
        assert sqlite3.connect(p).execute("SELECT COUNT(*) FROM events").fetchone()[0] == n * 5


def _busy_process(path: str, who: str, start) -> dict:
    """One worker process: threads claiming jobs and beating for them, recording events and
    checkpoints with their token, and uploads arriving meanwhile (the API in the same process)."""
    from tuneforge.jobs.store import Store, new_id

    claimed, errors = [], []

    def worker(t: int) -> None:
        store = Store(path)
        try:
            while (job := store.claim(f"{who}:{t}", lease_s=60)) is not None:
                claimed.append(job["id"])
                for step in range(1, 4):
                    assert store.heartbeat(job["id"], job["token"], lease_s=60) is not None
                    assert store.add_event(job["id"], f"step {step}", type="metrics", token=job["token"])
                    assert store.add_checkpoint(job["id"], step, "m", f"/c/{step}", {}, token=job["token"])
                assert store.update_owned(job["id"], job["token"], status="succeeded", worker=None)
        except Exception:
            errors.append(traceback.format_exc())

    def uploads() -> None:
        store = Store(path)
        try:
            for i in range(30):
                store.add_file(new_id("file"), f"{who}-{i}.jsonl", "fine-tune", 1, "0" * 64, "/f")
        except Exception:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)] + [threading.Thread(target=uploads)]
    start.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise AssertionError(errors[0])
    return {"claimed": claimed}


def test_workers_in_threads_and_processes_lose_nothing_and_share_no_job(tmp_path):
    from tuneforge.jobs.store import Store

    path = str(tmp_path / "jobs.db")
    store = Store(path)
    for i in range(JOBS):
        store.add_job(_job(i), "Created")
    n = 4
    out = _in_processes(n, _busy_process, lambda i: (path, f"host:{i}"))
    claimed = [j for o in out for j in o["claimed"]]
    assert sorted(claimed) == sorted(_job(i)["id"] for i in range(JOBS))  # each job once, none twice
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0] == JOBS
    assert db.execute("SELECT COUNT(*) FROM events WHERE type = 'metrics'").fetchone()[0] == JOBS * 3
    assert db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == JOBS * 3
    assert db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == n * 30
