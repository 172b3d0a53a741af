"""The persistent job queue: uploaded files, fine-tuning jobs, their events and checkpoints, in SQLite.

Schema (version 1, in `PRAGMA user_version`; WAL mode, so the API, any number of workers
and `tuneforge jobs list` read and write the same file at once):

    files        id (file-…), filename, purpose, bytes, sha256, path, created_at
    jobs         id (ftjob-…), status, model, base_path, training_file, validation_file,
                 method (JSON), hyperparameters (resolved, JSON), recipe (JSON: the run's recipe),
                 suffix, seed, metadata, error (JSON), fine_tuned_model, result_files,
                 run_dir, trained_tokens, created_at / started_at / finished_at,
                 worker, heartbeat_at, attempts, resume
    events       id (ftevent-…), job_id, created_at, level, type (message|metrics), message, data
    checkpoints  id (ftckpt-…), job_id, step, model, path, metrics, created_at

Every `seq` column is the insertion order; lists are newest first with an `after` cursor,
as OpenAI's are. A job is owned by the worker named in `worker` while it is
`validating_files` or `running`; every change a worker makes is conditional on still
owning the job (`WHERE worker = ?`), so a job cancelled or taken over in the meantime is
never overwritten, and `claim` takes a job inside one write transaction, so two workers
never run the same job.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

SCHEMA_VERSION = 1
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
  resume INTEGER NOT NULL DEFAULT 0
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
JSON_COLUMNS = ("method", "hyperparameters", "recipe", "metadata", "error", "result_files", "data", "metrics")
TERMINAL = ("succeeded", "failed", "cancelled")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def worker_id() -> str:
    """host:pid:random — the host and pid let a restarted worker see that a job's owner is gone."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def owner_gone(worker: Optional[str]) -> bool:
    """True when `worker` ran on this host and its process no longer exists."""
    host, _, rest = (worker or "").partition(":")
    pid = rest.partition(":")[0]
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as db:
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        # one short-lived connection per operation: safe from any thread or process
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
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

    def claim(self, worker: str, status: str = "queued", job_id: Optional[str] = None) -> Optional[dict]:
        """Take the oldest job in `status` (or the named one) for `worker`, atomically.

        A `validating_files` job is taken for validation only while no live owner holds it.
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
                f"UPDATE jobs SET status = ?, worker = ?, heartbeat_at = ?{started} WHERE id = ?",
                (new_status, worker, now, *((int(now),) if started else ()), row["id"]),
            )
        return self.get_job(row["id"])

    def update_owned(self, job_id: str, owner: str, events: tuple = (), **fields: Any) -> bool:
        """Change fields of a job only while `owner` still owns it (not cancelled, not taken over).

        `events` ((message, level) pairs) are added in the same transaction, so a client that sees
        the new status also sees why.
        """
        fields = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in fields.items()}
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ? AND worker = ? AND status IN ('validating_files', 'running')",
                (*fields.values(), job_id, owner),
            )
            if cur.rowcount == 1:
                for message, level in events:
                    self._insert(
                        db,
                        "events",
                        {
                            "id": new_id("ftevent"),
                            "job_id": job_id,
                            "level": level,
                            "created_at": int(time.time()),
                            "type": "message",
                            "message": message,
                        },
                    )
        return cur.rowcount == 1

    def owns(self, job_id: str, worker: str) -> bool:
        with self._conn() as db:
            r = db.execute(
                "SELECT 1 FROM jobs WHERE id = ? AND worker = ? AND status IN ('validating_files', 'running')",
                (job_id, worker),
            ).fetchone()
        return r is not None

    def heartbeat(self, job_id: str, worker: str) -> bool:
        return self.update_owned(job_id, worker, heartbeat_at=time.time())

    def recover(
        self,
        stale_after_s: float,
        max_attempts: int,
        gone: Callable[[Optional[str]], bool] = owner_gone,
    ) -> list[tuple[dict, str]]:
        """Jobs whose worker died (process gone, or no heartbeat for `stale_after_s`): a running job
        is re-queued to resume from its last checkpoint, or failed once it has used `max_attempts`;
        a job left in validation is handed back for validation. Returns (job, what happened)."""
        now, out = time.time(), []
        with self._conn() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE status IN ('running', 'validating_files') AND worker IS NOT NULL"
            ).fetchall()
        for r in rows:
            job = self._row(r)
            if not (gone(job["worker"]) or now - (job["heartbeat_at"] or 0) > stale_after_s):
                continue
            msg = f"The worker running this job stopped ({job['worker']}); "
            if job["status"] == "validating_files":
                fields, what = {"worker": None}, "revalidate"
                msg += "validating again"
            elif job["attempts"] >= max_attempts:
                what = "failed"
                fields = {
                    "status": "failed",
                    "worker": None,
                    "finished_at": int(now),
                    "error": {
                        "code": "worker_lost",
                        "param": None,
                        "message": f"the worker running this job stopped {job['attempts']} time(s) "
                        f"(last: {job['worker']}); giving up after {max_attempts} attempt(s)",
                    },
                }
                msg += "the job failed after " + f"{job['attempts']} attempt(s)"
            else:
                fields, what = {"status": "queued", "worker": None, "resume": 1}, "requeued"
                msg += "re-queued to resume from its last checkpoint"
            level = "error" if what == "failed" else "warn"
            if self.update_owned(job["id"], job["worker"], events=[(msg, level)], **fields):
                out.append((job, what))
        return out

    # events and checkpoints ------------------------------------------------------------
    def add_event(
        self, job_id: str, message: str, level: str = "info", type: str = "message", data: Optional[dict] = None
    ) -> None:
        with self._tx() as db:
            self._insert(
                db,
                "events",
                {
                    "id": new_id("ftevent"),
                    "job_id": job_id,
                    "created_at": int(time.time()),
                    "level": level,
                    "type": type,
                    "message": message,
                    "data": data,
                },
            )

    def list_events(self, job_id: str, after: Optional[str], limit: int) -> tuple[list[dict], bool]:
        return self._page("events", "job_id = ?", (job_id,), after, limit)

    def add_checkpoint(self, job_id: str, step: int, model: str, path: str, metrics: dict) -> None:
        with self._tx() as db:
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

    def list_checkpoints(self, job_id: str, after: Optional[str], limit: int) -> tuple[list[dict], bool]:
        return self._page("checkpoints", "job_id = ?", (job_id,), after, limit)
