"""Job ownership is a lease with a fencing token (jobs/store.py), on the store alone:

- racing workers (threads, and processes) claim one queued job: exactly one wins;
- a job is taken over only once its owner's lease has run out, and heartbeats keep it;
- a stale owner, whose job was taken over, has every write refused (status, events, checkpoints,
  heartbeats, hand-back);
- a graceful hand-back (shutdown, restart) does not use up an attempt;
- a version-1 jobs.db (before leases) gets the new columns when opened, by several processes at once.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading

import pytest

pytestmark = pytest.mark.timeout(60)
JOB = "ftjob-000000000000000000000001"


def _queued_job(store, job_id: str = JOB, status: str = "queued") -> str:
    store.add_job(
        {
            "id": job_id,
            "status": status,
            "model": "tiny",
            "base_path": "x",
            "training_file": "file-1",
            "method": {"type": "supervised"},
            "hyperparameters": {},
            "recipe": {},
            "seed": 1,
            "run_dir": "runs/x",
        },
        "Created",
    )
    return job_id


def test_racing_threads_exactly_one_claims_the_job(tmp_path):
    from tuneforge.jobs.store import Store

    db = tmp_path / "jobs.db"
    store = Store(db)
    for round_ in range(10):
        jid = _queued_job(store, f"ftjob-{round_:024d}")
        start, won = threading.Barrier(6), []

        def race(name: str, start: threading.Barrier, won: list) -> None:
            s = Store(db)
            start.wait()
            if (job := s.claim(name)) is not None:
                won.append((name, job["id"], job["token"]))

        threads = [threading.Thread(target=race, args=(f"host:1:w{i}", start, won)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, won
        row = store.get_job(jid)
        assert row["status"] == "running" and row["worker"] == won[0][0] and row["token"] == won[0][2] == 1


def _race_in_process(db: str, name: str, start, results) -> None:
    from tuneforge.jobs.store import Store

    s = Store(db)
    for _ in range(5):  # five rounds, one queued job each
        start.wait()
        job = s.claim(name)
        results.put((name, job["id"] if job else None))
        start.wait()  # the parent queues the next job


def test_racing_processes_exactly_one_claims_each_job(tmp_path):
    from tuneforge.jobs.store import Store

    db = tmp_path / "jobs.db"
    store = Store(db)
    ctx = multiprocessing.get_context("fork")
    n = 4
    start, results = ctx.Barrier(n + 1, timeout=30), ctx.Queue()
    procs = [
        ctx.Process(target=_race_in_process, args=(str(db), f"host:{i}:p", start, results), daemon=True)
        for i in range(n)
    ]
    for p in procs:
        p.start()
    try:
        for round_ in range(5):
            jid = _queued_job(store, f"ftjob-{round_:024d}")
            start.wait()  # go
            got = [results.get(timeout=30) for _ in range(n)]
            winners = [name for name, job in got if job is not None]
            assert [job for _, job in got if job is not None] == [jid] and len(winners) == 1, got
            assert store.get_job(jid)["worker"] == winners[0]
            start.wait()
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)


def test_a_job_is_taken_over_only_after_its_lease_ran_out(tmp_path):
    from tuneforge.jobs.store import Store

    store = Store(tmp_path / "jobs.db")
    _queued_job(store)
    job = store.claim("host:1:a", lease_s=30)
    assert job["lease_until"] == pytest.approx(job["heartbeat_at"] + 30)
    # same host name, any process id: nothing but the lease decides
    assert store.recover(max_attempts=3, now=job["lease_until"] - 1) == []
    until = store.heartbeat(JOB, job["token"], lease_s=60)
    assert until is not None and until > job["lease_until"] + 29
    assert store.recover(max_attempts=3, now=job["lease_until"] + 0.5) == []  # the heartbeat extended it
    [(taken, what)] = store.recover(max_attempts=3, now=until + 0.5)
    assert what == "requeued" and taken["token"] == job["token"]
    row = store.get_job(JOB)
    assert row["status"] == "queued" and row["worker"] is None and row["resume"] == 1
    assert row["token"] == job["token"] + 1  # a takeover fences the old owner off at once


def test_a_live_job_of_a_container_with_the_same_host_name_is_not_taken(jobs_cfg):
    """Containers often share a host name, and a process id means nothing across them: a worker
    whose name says "this host, a process that does not exist here" still holds its lease."""
    import socket

    from tuneforge.jobs.store import Store
    from tuneforge.jobs.worker import Worker

    store = Store(jobs_cfg.db_path)
    _queued_job(store)
    other = store.claim(f"{socket.gethostname()}:4194303:other-container", lease_s=600)  # no such pid here
    assert Worker(jobs_cfg).run_once() is None  # recovers nothing, claims nothing
    row = store.get_job(JOB)
    assert row["status"] == "running" and row["worker"] == other["worker"] and row["token"] == other["token"]
    assert store.heartbeat(JOB, other["token"], lease_s=600) is not None  # still its owner's


def test_a_stale_owner_cannot_write_after_a_takeover(tmp_path):
    from tuneforge.jobs.store import Store

    store = Store(tmp_path / "jobs.db")
    _queued_job(store)
    old = store.claim("host:1:old", lease_s=5)
    store.recover(max_attempts=3, now=old["lease_until"] + 1)
    new = store.claim("host:1:new", lease_s=60)
    assert new["token"] > old["token"] and new["attempts"] == 2

    tok = old["token"]
    assert not store.update_owned(JOB, tok, status="succeeded", events=[("stale", "info")])
    assert not store.update_owned(JOB, tok, status="failed")
    assert store.heartbeat(JOB, tok) is None
    assert not store.owns(JOB, tok)
    assert not store.add_event(JOB, "stale metrics", type="metrics", token=tok)
    assert not store.add_checkpoint(JOB, 4, "m:ckpt-step-4", "/old/checkpoint-4", {}, token=tok)
    assert not store.requeue(JOB, tok, "stale hand-back")
    row = store.get_job(JOB)
    assert row["status"] == "running" and row["worker"] == "host:1:new" and row["token"] == new["token"]
    events, _ = store.list_events(JOB, None, 100)
    assert not any("stale" in e["message"] for e in events)
    assert store.list_checkpoints(JOB, None, 10)[0] == []

    # the new owner's writes go through
    assert store.add_checkpoint(JOB, 4, "m:ckpt-step-4", "/new/checkpoint-4", {}, token=new["token"])
    assert store.update_owned(JOB, new["token"], status="succeeded", worker=None)
    assert store.get_job(JOB)["status"] == "succeeded"


def test_a_stale_validation_cannot_write_after_a_takeover(tmp_path):
    """A validation keeps its status when taken over, so only the token tells the two owners apart."""
    from tuneforge.jobs.store import Store

    store = Store(tmp_path / "jobs.db")
    _queued_job(store, status="validating_files")  # as created by the API
    old = store.claim("api:1:old", "validating_files", lease_s=5)
    assert store.claim("api:1:other", "validating_files") is None  # held
    [(_, what)] = store.recover(max_attempts=3, now=old["lease_until"] + 1)
    assert what == "revalidate"
    new = store.claim("api:1:new", "validating_files", lease_s=60)
    assert new["token"] > old["token"]
    assert not store.update_owned(JOB, old["token"], status="failed", error={"code": "stale"})
    assert store.update_owned(JOB, new["token"], status="queued", worker=None)
    assert store.get_job(JOB)["status"] == "queued" and store.get_job(JOB)["error"] is None


def test_a_takeover_does_not_race_a_heartbeat(tmp_path):
    """recover reads the expired lease, then takes the job in its own transaction: a heartbeat
    that lands in between keeps the job with its owner."""
    from tuneforge.jobs.store import Store

    store = Store(tmp_path / "jobs.db")
    _queued_job(store)
    job = store.claim("host:1:a", lease_s=1)
    late = job["lease_until"] + 0.5
    with sqlite3.connect(store.path) as db:  # the owner's heartbeat, just in time (its lease now ends later)
        db.execute("UPDATE jobs SET lease_until = ? WHERE id = ?", (late + 10, JOB))
    assert store.recover(max_attempts=3, now=late) == []
    assert store.owns(JOB, job["token"])


def test_graceful_requeues_do_not_use_up_attempts(tmp_path):
    from tuneforge.jobs.store import Store

    store = Store(tmp_path / "jobs.db")
    _queued_job(store)
    for restart in range(5):  # five graceful restarts of the worker in a row, max_attempts=2
        job = store.claim(f"host:1:w{restart}")
        assert job["attempts"] == 1, restart
        assert store.requeue(JOB, job["token"], "The worker is shutting down; job re-queued")
        row = store.get_job(JOB)
        assert row["status"] == "queued" and row["resume"] == 1 and row["attempts"] == 0
        assert store.recover(max_attempts=2, now=job["lease_until"] + 100) == []  # nothing to take over
    # a crash (the lease runs out) does count: the second one fails the job
    for crash in (1, 2):
        job = store.claim(f"host:1:c{crash}")
        assert job["attempts"] == crash
        [(_, what)] = store.recover(max_attempts=2, now=job["lease_until"] + 1)
        assert what == ("requeued" if crash == 1 else "failed")
    assert store.get_job(JOB)["error"]["code"] == "worker_lost"


# ------------------------------------------------------------------ migration from version 1
V1_JOBS = """
CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, status TEXT NOT NULL,
  model TEXT NOT NULL, base_path TEXT NOT NULL, training_file TEXT NOT NULL, validation_file TEXT,
  method TEXT NOT NULL, hyperparameters TEXT NOT NULL, recipe TEXT NOT NULL, suffix TEXT,
  seed INTEGER NOT NULL, metadata TEXT, error TEXT, fine_tuned_model TEXT, result_files TEXT NOT NULL DEFAULT '[]',
  run_dir TEXT NOT NULL, trained_tokens INTEGER, created_at INTEGER NOT NULL, started_at INTEGER,
  finished_at INTEGER, worker TEXT, heartbeat_at REAL, attempts INTEGER NOT NULL DEFAULT 0,
  resume INTEGER NOT NULL DEFAULT 0
);
PRAGMA user_version = 1;
"""


def _v1_row(job_id: str, status: str, worker, heartbeat_at) -> tuple:
    return (
        job_id,
        status,
        "tiny",
        "x",
        "file-1",
        '{"type": "supervised"}',
        "{}",
        "{}",
        1,
        "r",
        1,
        worker,
        heartbeat_at,
    )


def _v1_db(path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_JOBS)
        conn.executemany(
            "INSERT INTO jobs (id, status, model, base_path, training_file, method, hyperparameters, recipe, "
            "seed, run_dir, created_at, worker, heartbeat_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                _v1_row("ftjob-run", "running", "host:7:old", 1000.0),
                _v1_row("ftjob-queued", "queued", None, None),
            ],
        )


def _open(dbs: list, start, errors) -> None:
    from tuneforge.jobs.store import Store

    for db in dbs:  # every process opens the same old file at the same moment, once per round
        start.wait()
        try:
            Store(db)
        except Exception as exc:
            errors.put(repr(exc))


def test_a_version_1_jobs_db_is_upgraded_in_place_by_concurrent_openers(tmp_path):
    from tuneforge.jobs.store import DEFAULT_LEASE_S, SCHEMA_VERSION, Store

    dbs = [tmp_path / f"jobs-{i}.db" for i in range(8)]
    for db in dbs:
        _v1_db(db)
    ctx = multiprocessing.get_context("fork")
    start, errors = ctx.Barrier(4, timeout=30), ctx.Queue()
    procs = [ctx.Process(target=_open, args=([str(d) for d in dbs], start, errors), daemon=True) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    assert errors.empty() and all(p.exitcode == 0 for p in procs), errors.get()

    for db in dbs:
        store = Store(db)  # and once more: opening an upgraded file changes nothing
        cols = [r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(jobs)")]
        assert cols.count("lease_until") == 1 and cols.count("token") == 1
        assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    running = store.get_job("ftjob-run")
    assert running["token"] == 0 and running["lease_until"] == 1000.0 + DEFAULT_LEASE_S  # long expired
    [(job, what)] = store.recover(max_attempts=3)
    assert job["id"] == "ftjob-run" and what == "requeued"
    claimed = [store.claim("host:1:new")["id"] for _ in range(2)]
    assert sorted(claimed) == ["ftjob-queued", "ftjob-run"]
