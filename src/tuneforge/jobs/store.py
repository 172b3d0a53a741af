"""The persistent job queue: uploaded files, fine-tuning jobs, their events and checkpoints, in SQLite.

Schema (version 2, in `PRAGMA user_version`; WAL mode, so the API, any number of workers
and `tuneforge jobs list` read and write the same file at once; an older file gets the new
columns when it is opened):

    files        id (file-…), filename, purpose, bytes, sha256, path, created_at
    jobs         id (ftjob-…), status, model, base_path, training_file, validation_file,
                 method (JSON), hyperparameters (resolved, JSON), recipe (JSON: the run's recipe),
                 suffix, seed, metadata, error (JSON), fine_tuned_model, result_files,
                 run_dir, trained_tokens, created_at / started_at / finished_at,
                 worker, heartbeat_at, attempts, resume,
                 lease_until (v2: the owner's lease ends then), token (v2: the fencing token)
    events       id (ftevent-…), job_id, created_at, level, type (message|metrics), message, data
    checkpoints  id (ftckpt-…), job_id, step, model, path, metrics, created_at

Every `seq` column is the insertion order; lists are newest first with an `after` cursor,
as OpenAI's are.

Ownership is a lease. `claim` takes a job in one write transaction: it names the owner
(`worker`, for people), sets `lease_until` and increments the job's `token`, a fencing token
that changes on every claim and every takeover. The owner's heartbeat extends the lease only
while the token is still its own, and every change a worker makes (status, result, events,
checkpoints) is conditioned on that token (`WHERE token = ?`), so an owner whose job was
cancelled or taken over has its writes refused, learns so, and stops. A job is taken over
(`recover`) only once its lease has run out: nothing here guesses liveness from host names
or process ids, which containers sharing a host name would confuse.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from ..registry import enable_wal

SCHEMA_VERSION = 2
DEFAULT_LEASE_S = 60.0  # JobsConfig.stale_after_s in the worker and the API
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, filename TEXT NOT NULL,
  purpose TEXT NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, path TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, status TEXT NOT NULL,
  model TEXT NOT NULL, base_path TEXT NOT NULL, training_file TEXT NOT NULL, validation_file TEXT,
  method TEXT NOT NULL, hyperparameters TEXT NOT NULL, recipe TEXT NOT NULL, suffix TEXT,
  seed INTEGER NOT NULL, metadata TEXT, error TEXT, fine_tuned_model TEXT, result_files TEXT NOT NULL DEFAULT '[]',
  run_dir TEXT NOT NULL, trained_tokens INTEGER, created_at INTEGER NOT NULL, started_at INTEGER,
  finished_at INTEGER, worker TEXT, heartbeat_at REAL, attempts INTEGER NOT NULL DEFAULT 0,
  resume INTEGER NOT NULL DEFAULT 0, lease_until REAL, token INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
  created_at INTEGER NOT NULL, level TEXT NOT NULL, type TEXT NOT NULL, message TEXT NOT NULL, data TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL, step INTEGER NOT NULL,
  model TEXT NOT NULL, path TEXT NOT NULL, metrics TEXT NOT NULL, created_at INTEGER NOT NULL,
  UNIQUE (job_id, step)
);
"""
# columns added after version 1: an older jobs.db gets them (ALTER TABLE) when it is opened
ADDED_COLUMNS = {"jobs": (("lease_until", "REAL"), ("token", "INTEGER NOT NULL DEFAULT 0"))}
ACTIVE = ("validating_files", "running")  # the statuses in which a job has an owner
JSON_COLUMNS = ("method", "hyperparameters", "recipe", "metadata", "error", "result_files", "data", "metrics")
TERMINAL = ("succeeded", "failed", "cancelled")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def worker_id() -> str:
    """host:pid:random — a name for people reading `jobs list` and the events; ownership is the token."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return  # created (WAL first, the version last) by this version or a later one
            enable_wal(db)
            db.execute("BEGIN IMMEDIATE")  # processes opening a new or older file at once: one upgrades it
            try:
                for stmt in filter(str.strip, SCHEMA.split(";")):
                    db.execute(stmt)
                for table, columns in ADDED_COLUMNS.items():
                    have = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
                    for name, decl in columns:
                        if name not in have:
                            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
                # jobs a version-1 worker holds: their lease is what its staleness rule gave them
                db.execute(
                    "UPDATE jobs SET lease_until = COALESCE(heartbeat_at, 0) + ? "
                    "WHERE lease_until IS NULL AND worker IS NOT NULL",
                    (DEFAULT_LEASE_S,),
                )
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        # one short-lived connection per operation: safe from any thread or process; the busy
        # timeout makes a writer wait for another's transaction instead of failing "database is locked"
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the write lock from its first statement."""
        with self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @staticmethod
    def _row(r: Optional[sqlite3.Row]) -> Optional[dict]:
        if r is None:
            return None
        d = dict(r)
        for k in JSON_COLUMNS:
            if isinstance(d.get(k), str):
                d[k] = json.loads(d[k])
        return d

    def _insert(self, db: sqlite3.Connection, table: str, row: dict) -> None:
        row = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in row.items()}
        cols = ", ".join(row)
        db.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def _page(
        self, table: str, where: str, args: tuple, after: Optional[str], limit: int, order: str = "desc"
    ) -> tuple[list[dict], bool]:
        """Rows of `table` (newest first unless order='asc') after the row with id `after`."""
        op, direction = (">", "ASC") if order == "asc" else ("<", "DESC")
        with self._conn() as db:
            if after:
                cur = db.execute(f"SELECT seq FROM {table} WHERE id = ?", (after,)).fetchone()
                if cur is None:
                    return [], False
                where, args = f"{where} AND seq {op} ?", args + (cur["seq"],)
            rows = db.execute(
                f"SELECT * FROM {table} WHERE {where} ORDER BY seq {direction} LIMIT ?", args + (limit + 1,)
            ).fetchall()
        return [self._row(r) for r in rows[:limit]], len(rows) > limit

    # files -----------------------------------------------------------------------------
    def add_file(self, file_id: str, filename: str, purpose: str, nbytes: int, sha256: str, path: str) -> dict:
        row = {
            "id": file_id,
            "filename": filename,
            "purpose": purpose,
            "bytes": nbytes,
            "sha256": sha256,
            "path": path,
            "created_at": int(time.time()),
        }
        with self._tx() as db:
            self._insert(db, "files", row)
        return row

    def get_file(self, file_id: str) -> Optional[dict]:
        with self._conn() as db:
            return self._row(db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone())

    def list_files(
        self, purpose: Optional[str], after: Optional[str], limit: int, order: str
    ) -> tuple[list[dict], bool]:
        return self._page(
            "files", "purpose = ?" if purpose else "1", (purpose,) if purpose else (), after, limit, order
        )

    def delete_file(self, file_id: str) -> Optional[str]:
        """Delete the row; returns the id of an unfinished job that still needs the file instead."""
        with self._tx() as db:
            busy = db.execute(
                f"SELECT id FROM jobs WHERE (training_file = ? OR validation_file = ?) AND status NOT IN "
                f"({', '.join('?' * len(TERMINAL))})",
                (file_id, file_id, *TERMINAL),
            ).fetchone()
            if busy:
                return busy["id"]
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        return None

    # jobs ------------------------------------------------------------------------------
    def add_job(self, row: dict, event: str) -> dict:
        """Insert a job with its first event, together: a worker never sees one without the other."""
        now = int(time.time())
        with self._tx() as db:
            self._insert(db, "jobs", {**row, "created_at": now})
            self._insert(
                db,
                "events",
                {
                    "id": new_id("ftevent"),
                    "job_id": row["id"],
                    "created_at": now,
                    "level": "info",
                    "type": "message",
                    "message": event,
                },
            )
        return self.get_job(row["id"])

    def get_job(self, job_id: str) -> Optional[dict]:
        with self._conn() as db:
            return self._row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def list_jobs(
        self, after: Optional[str] = None, limit: int = 20, status: Optional[str] = None
    ) -> tuple[list[dict], bool]:
        return self._page("jobs", "status = ?" if status else "1", (status,) if status else (), after, limit)

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not finished; its worker notices at its next training step."""
        now = int(time.time())
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status NOT IN "
                f"({', '.join('?' * len(TERMINAL))})",
                (now, job_id, *TERMINAL),
            )
            if cur.rowcount == 1:
                self._insert(
                    db,
                    "events",
                    {
                        "id": new_id("ftevent"),
                        "job_id": job_id,
                        "created_at": now,
                        "level": "info",
                        "type": "message",
                        "message": "Fine-tuning job cancelled",
                    },
                )
        return cur.rowcount == 1

    def claim(
        self, worker: str, status: str = "queued", job_id: Optional[str] = None, lease_s: float = DEFAULT_LEASE_S
    ) -> Optional[dict]:
        """Take the oldest job in `status` (or the named one) for `worker`, atomically, with a lease of
        `lease_s` seconds; the row returned carries the new fencing `token` every later write names.

        A `validating_files` job is taken for validation only while nobody holds it.
        """
        now = time.time()
        with self._tx() as db:
            where, args = "status = ?", [status]
            if status == "validating_files":
                where += " AND worker IS NULL"
            if job_id:
                where, args = where + " AND id = ?", args + [job_id]
            row = db.execute(f"SELECT id FROM jobs WHERE {where} ORDER BY seq LIMIT 1", args).fetchone()
            if row is None:
                return None
            started = ", started_at = COALESCE(started_at, ?), attempts = attempts + 1" if status == "queued" else ""
            new_status = "running" if status == "queued" else status
            db.execute(
                "UPDATE jobs SET status = ?, worker = ?, heartbeat_at = ?, lease_until = ?, token = token + 1"
                f"{started} WHERE id = ?",
                (new_status, worker, now, now + lease_s, *((int(now),) if started else ()), row["id"]),
            )
            return self._row(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def _event_row(self, job_id: str, message: str, level: str) -> dict:
        return {
            "id": new_id("ftevent"),
            "job_id": job_id,
            "level": level,
            "created_at": int(time.time()),
            "type": "message",
            "message": message,
        }

    def _update(
        self, db: sqlite3.Connection, job_id: str, where: str, args: tuple, fields: dict, events: tuple, raw: str = ""
    ) -> bool:
        """UPDATE one job WHERE id and `where` hold (inside `db`'s transaction), with its events."""
        fields = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in fields.items()}
        sets = ", ".join([f"{k} = ?" for k in fields] + ([raw] if raw else []))
        cur = db.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND {where}", (*fields.values(), job_id, *args))
        if cur.rowcount == 1:
            for message, level in events:
                self._insert(db, "events", self._event_row(job_id, message, level))
        return cur.rowcount == 1

    def update_owned(self, job_id: str, token: int, events: tuple = (), **fields: Any) -> bool:
        """Change fields of a job only while the holder of fencing token `token` still owns it (not
        cancelled, not taken over); False when the change was refused.

        `events` ((message, level) pairs) are added in the same transaction, so a client that sees
        the new status also sees why.
        """
        active = ", ".join("?" * len(ACTIVE))
        with self._tx() as db:
            return self._update(db, job_id, f"token = ? AND status IN ({active})", (token, *ACTIVE), fields, events)

    def owns(self, job_id: str, token: int) -> bool:
        with self._conn() as db:
            r = db.execute(
                f"SELECT 1 FROM jobs WHERE id = ? AND token = ? AND status IN ({', '.join('?' * len(ACTIVE))})",
                (job_id, token, *ACTIVE),
            ).fetchone()
        return r is not None

    def heartbeat(self, job_id: str, token: int, lease_s: float = DEFAULT_LEASE_S) -> Optional[float]:
        """Extend the lease of token `token` to `lease_s` from now: the new end (by this clock, taken
        before the write, so never later than the stored one), or None when the job is no longer its own."""
        until = time.time() + lease_s
        return until if self.update_owned(job_id, token, heartbeat_at=time.time(), lease_until=until) else None

    def requeue(self, job_id: str, token: int, message: str) -> bool:
        """Hand a running job back to the queue, to resume from its last checkpoint: a graceful stop
        (shutdown, restart, Ctrl-C), so the attempt it was on does not count against `max_attempts`."""
        with self._tx() as db:
            return self._update(
                db,
                job_id,
                "token = ? AND status = 'running'",
                (token,),
                {"status": "queued", "worker": None, "lease_until": None, "resume": 1},
                ((message, "warn"),),
                raw="attempts = MAX(attempts - 1, 0)",
            )

    def recover(self, max_attempts: int, now: Optional[float] = None) -> list[tuple[dict, str]]:
        """Jobs whose owner's lease ran out (`now`, default the clock): a running job is re-queued to
        resume from its last checkpoint, or failed once it has used `max_attempts`; a job left in
        validation is handed back for validation. Each takeover changes the job's token, so the old
        owner, should it still be running, is refused from then on. Returns (job, what happened)."""
        now = time.time() if now is None else now
        active = ", ".join("?" * len(ACTIVE))
        with self._conn() as db:
            rows = db.execute(
                f"SELECT * FROM jobs WHERE status IN ({active}) AND worker IS NOT NULL AND lease_until < ?",
                (*ACTIVE, now),
            ).fetchall()
        out = []
        for r in rows:
            job = self._row(r)
            msg = f"The worker running this job stopped ({job['worker']}: no heartbeat within its lease); "
            if job["status"] == "validating_files":
                fields, what = {"worker": None, "lease_until": None}, "revalidate"
                msg += "validating again"
            elif job["attempts"] >= max_attempts:
                what = "failed"
                fields = {
                    "status": "failed",
                    "worker": None,
                    "lease_until": None,
                    "finished_at": int(now),
                    "error": {
                        "code": "worker_lost",
                        "param": None,
                        "message": f"the worker running this job stopped {job['attempts']} time(s) "
                        f"(last: {job['worker']}); giving up after {max_attempts} attempt(s)",
                    },
                }
                msg += f"the job failed after {job['attempts']} attempt(s)"
            else:
                fields, what = {"status": "queued", "worker": None, "lease_until": None, "resume": 1}, "requeued"
                msg += "re-queued to resume from its last checkpoint"
            level = "error" if what == "failed" else "warn"
            with self._tx() as db:  # still the same owner, and still expired: a heartbeat since then wins
                took = self._update(
                    db,
                    job["id"],
                    f"token = ? AND status IN ({active}) AND lease_until < ?",
                    (job["token"], *ACTIVE, now),
                    fields,
                    ((msg, level),),
                    raw="token = token + 1",
                )
            if took:
                out.append((job, what))
        return out

    # events and checkpoints ------------------------------------------------------------
    @staticmethod
    def _holds(db: sqlite3.Connection, job_id: str, token: Optional[int]) -> bool:
        """No token: anyone may write (the API, recovery). A token: only while it is the job's."""
        if token is None:
            return True
        return db.execute("SELECT 1 FROM jobs WHERE id = ? AND token = ?", (job_id, token)).fetchone() is not None

    def add_event(
        self,
        job_id: str,
        message: str,
        level: str = "info",
        type: str = "message",
        data: Optional[dict] = None,
        token: Optional[int] = None,
    ) -> bool:
        """Add an event; with `token` (a worker's) only while the job is still that worker's."""
        with self._tx() as db:
            if not self._holds(db, job_id, token):
                return False
            self._insert(db, "events", {**self._event_row(job_id, message, level), "type": type, "data": data})
        return True

    def list_events(self, job_id: str, after: Optional[str], limit: int) -> tuple[list[dict], bool]:
        return self._page("events", "job_id = ?", (job_id,), after, limit)

    def add_checkpoint(
        self, job_id: str, step: int, model: str, path: str, metrics: dict, token: Optional[int] = None
    ) -> bool:
        """Record a checkpoint; with `token` (a worker's) only while the job is still that worker's."""
        with self._tx() as db:
            if not self._holds(db, job_id, token):
                return False
            # a resumed job may save the same step again: the newer checkpoint replaces the row
            db.execute("DELETE FROM checkpoints WHERE job_id = ? AND step = ?", (job_id, step))
            self._insert(
                db,
                "checkpoints",
                {
                    "id": new_id("ftckpt"),
                    "job_id": job_id,
                    "step": step,
                    "model": model,
                    "path": path,
                    "metrics": metrics,
                    "created_at": int(time.time()),
                },
            )
        return True

    def list_checkpoints(self, job_id: str, after: Optional[str], limit: int) -> tuple[list[dict], bool]:
        return self._page("checkpoints", "job_id = ?", (job_id,), after, limit)
