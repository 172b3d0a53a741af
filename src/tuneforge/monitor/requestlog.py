"""The request log: one SQLite row per API request, read by stage 7 (monitoring).

Schema (version 2, stored in `PRAGMA user_version`; a later version adds columns or
tables, never renames or drops them; an older file is upgraded in place when opened):

    requests
      id                 INTEGER PRIMARY KEY   insertion order
      ts                 TEXT    NOT NULL      arrival time, ISO 8601 UTC with milliseconds
      request_id         TEXT    NOT NULL      response `id` (chatcmpl-…/cmpl-…), also the X-Request-Id header
      route              TEXT    NOT NULL      /v1/chat/completions | /v1/completions
      model              TEXT    NOT NULL      the `model` the client asked for
      adapter            TEXT                  adapter name; NULL for the base model or an unknown model
      stream             INTEGER NOT NULL      1 for server-sent events
      n                  INTEGER NOT NULL      choices asked for (× prompts on /v1/completions)
      status             INTEGER NOT NULL      HTTP status; 499 when the client went away mid-generation
      error_code         TEXT                  OpenAI error `code` (or `type`) when status >= 400
      finish_reason      TEXT                  of choice 0: stop | length | cancelled
      prompt_tokens      INTEGER NOT NULL      summed over prompts
      completion_tokens  INTEGER NOT NULL      summed over choices
      latency_ms         REAL    NOT NULL      arrival to last byte sent
      queue_ms           REAL                  waiting for the generation worker (NULL if it never ran)
      temperature        REAL                  as requested (NULL = greedy default)
      max_tokens         INTEGER               effective limit on new tokens
      user               TEXT                  OpenAI `user` field, as sent
      prompt             TEXT                  JSON messages / prompt text — only with content logging on
      completion         TEXT                  JSON list of choice texts — only with content logging on

    feedback (v2: `POST /v1/feedback`, one row per request; a later rating replaces it)
      request_id         TEXT    PRIMARY KEY   the `requests.request_id` rated
      ts                 TEXT    NOT NULL      when the feedback arrived (ISO 8601 UTC)
      rating             TEXT                  up | down | NULL (a correction alone)
      correction         TEXT                  the answer the model should have given
      comment            TEXT                  free text from the client

Rows are written by one background thread in WAL mode (readers never block the
writer), so a slow disk or a locked database never delays or fails a request. A database
locked by another writer (another server process, feedback, a retention job) is waited for,
up to `locked_retry_s`, with the rows kept meanwhile; only a row that still cannot be written
(or that finds the queue full) is dropped and counted (`tuneforge_request_log_errors_total`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from ..registry import BUSY_TIMEOUT_S, enable_wal, is_locked

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
COLUMNS = (
    "ts",
    "request_id",
    "route",
    "model",
    "adapter",
    "stream",
    "n",
    "status",
    "error_code",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "queue_ms",
    "temperature",
    "max_tokens",
    "user",
    "prompt",
    "completion",
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ts TEXT NOT NULL,
  request_id TEXT NOT NULL,
  route TEXT NOT NULL,
  model TEXT NOT NULL,
  adapter TEXT,
  stream INTEGER NOT NULL DEFAULT 0,
  n INTEGER NOT NULL DEFAULT 1,
  status INTEGER NOT NULL,
  error_code TEXT,
  finish_reason TEXT,
  prompt_tokens INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  latency_ms REAL NOT NULL,
  queue_ms REAL,
  temperature REAL,
  max_tokens INTEGER,
  user TEXT,
  prompt TEXT,
  completion TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);
CREATE INDEX IF NOT EXISTS requests_model_ts ON requests(model, ts);
CREATE INDEX IF NOT EXISTS requests_request_id ON requests(request_id);
CREATE TABLE IF NOT EXISTS feedback (
  request_id TEXT PRIMARY KEY,
  ts TEXT NOT NULL,
  rating TEXT,
  correction TEXT,
  comment TEXT
);
"""
_STOP = object()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
    enable_wal(conn)  # several server processes may create the same log at once
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable on app crash, fast
    return conn


def init_db(path: str | Path) -> None:
    """Create (or check) the database; raises at startup rather than on a request."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path}: request log schema v{version} is newer than this tuneforge "
                f"(v{SCHEMA_VERSION}) — upgrade tuneforge or use another --request-log"
            )
        conn.executescript(SCHEMA)  # v1 -> v2: only new tables/indexes, all IF NOT EXISTS
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.close()


class RequestLog:
    """Asynchronous, failure-tolerant writer of `requests` rows."""

    def __init__(
        self,
        path: str | Path,
        log_content: bool = False,
        on_error: Optional[Callable[[], None]] = None,
        max_pending: int = 10_000,
        locked_retry_s: float = 120.0,
    ):
        """`locked_retry_s`: how long rows wait for a database another writer keeps locked."""
        self.path, self.log_content = Path(path), log_content
        self.on_error = on_error or (lambda: None)
        self.locked_retry_s = locked_retry_s
        init_db(self.path)
        self._q: queue.Queue = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="tuneforge-request-log", daemon=True)
        self._thread.start()

    def write(self, **row: Any) -> None:
        """Queue one row (never blocks, never raises)."""
        try:
            if not self.log_content:
                row["prompt"] = row["completion"] = None
            row.setdefault("ts", utc_now())
            self._q.put_nowait(tuple(row.get(c) for c in COLUMNS))
        except Exception:  # queue.Full or a bad row: drop it, count it
            self._failed(1)

    def flush(self) -> None:
        """Wait until every queued row is written (or dropped)."""
        self._q.join()

    def close(self) -> None:
        self._q.put(_STOP)
        self._thread.join(timeout=10)

    def _failed(self, rows: int) -> None:
        try:
            for _ in range(rows):
                self.on_error()
        except Exception:
            pass

    def _insert(self, conn: sqlite3.Connection, rows: list[tuple]) -> None:
        marks = ",".join("?" * len(COLUMNS))
        conn.executemany(f"INSERT INTO requests ({','.join(COLUMNS)}) VALUES ({marks})", rows)
        conn.commit()

    def _insert_waiting(self, conn: Optional[sqlite3.Connection], rows: list[tuple]) -> sqlite3.Connection:
        """Insert `rows`, waiting (beyond the busy timeout, up to `locked_retry_s`) while another
        writer holds the database; the connection used. Other errors are raised at once."""
        deadline = time.monotonic() + self.locked_retry_s
        while True:
            try:
                conn = conn or connect(self.path)
                self._insert(conn, rows)
                return conn
            except sqlite3.OperationalError as exc:
                if conn is not None:
                    try:
                        conn.rollback()
                    except sqlite3.Error:
                        conn.close()
                        conn = None
                if not is_locked(exc) or time.monotonic() > deadline:
                    raise
                log.info("request log: %s busy, %d row(s) waiting: %s", self.path, len(rows), exc)
                time.sleep(0.05)

    def _run(self) -> None:
        conn: Optional[sqlite3.Connection] = None
        while True:
            item = self._q.get()
            batch = [item]
            while not self._q.empty() and len(batch) < 256:  # group rows that queued up meanwhile
                batch.append(self._q.get_nowait())
            rows = [r for r in batch if r is not _STOP]
            try:
                if rows:
                    conn = self._insert_waiting(conn, rows)
            except Exception as exc:  # a full disk or a locked database must not touch requests
                log.warning("request log: %d row(s) not written to %s: %s", len(rows), self.path, exc)
                self._failed(len(rows))
                if conn is not None:  # reconnect next time: the old connection may be what broke
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
            finally:
                for _ in batch:
                    self._q.task_done()
            if len(rows) != len(batch):
                if conn is not None:
                    conn.close()
                return


def read_since(path: str | Path, since_iso: Optional[str] = None) -> list[dict[str, Any]]:
    """Every row (from `since_iso` on, an ISO timestamp like the `ts` column), oldest first, read-only:
    monitoring reads the log while the server writes it."""
    conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=5.0)
    conn.row_factory = sqlite3.Row
    try:
        q, args = "SELECT * FROM requests", []
        if since_iso is not None:
            q, args = q + " WHERE ts >= ?", [since_iso]
        return [dict(r) for r in conn.execute(q + " ORDER BY id", args)]
    finally:
        conn.close()


def read_rows(path: str | Path, limit: int = 100) -> list[dict[str, Any]]:
    """The latest rows, newest first, as dicts (for tests, `tuneforge` monitoring and humans)."""
    conn = sqlite3.connect(str(path))
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id DESC LIMIT ?", (limit,))]
    finally:
        conn.close()


def find_request(path: str | Path, request_id: str) -> Optional[dict[str, Any]]:
    """The logged row of one request (the first, if an id was ever logged twice), or None."""
    conn = sqlite3.connect(str(path), timeout=5.0)
    conn.row_factory = sqlite3.Row
    try:
        r = conn.execute("SELECT * FROM requests WHERE request_id=? ORDER BY id LIMIT 1", (request_id,)).fetchone()
        return dict(r) if r else None
    finally:
        conn.close()


def write_feedback(
    path: str | Path,
    request_id: str,
    rating: Optional[str],
    correction: Optional[str] = None,
    comment: Optional[str] = None,
) -> dict[str, Any]:
    """Store (or replace) the feedback on one request; returns the stored row."""
    row = {"request_id": request_id, "ts": utc_now(), "rating": rating, "correction": correction, "comment": comment}
    conn = connect(path)
    try:
        with conn:
            conn.execute(
                "INSERT INTO feedback (request_id, ts, rating, correction, comment) VALUES (?,?,?,?,?) "
                "ON CONFLICT(request_id) DO UPDATE SET ts=excluded.ts, rating=excluded.rating, "
                "correction=excluded.correction, comment=excluded.comment",
                tuple(row.values()),
            )
    finally:
        conn.close()
    return row


def read_feedback(path: str | Path) -> list[dict[str, Any]]:
    """Every feedback row joined with its request (prompt, completion, model, adapter), oldest first."""
    init_db(path)  # a v1 log has no feedback table yet
    conn = sqlite3.connect(str(path))
    conn.row_factory = sqlite3.Row
    try:
        q = (
            "SELECT f.request_id, f.ts AS feedback_ts, f.rating, f.correction, f.comment, r.ts, r.route, r.model, "
            "r.adapter, r.prompt, r.completion, r.status FROM feedback f JOIN requests r ON r.request_id = f.request_id "
            "AND r.id = (SELECT MIN(id) FROM requests WHERE request_id = f.request_id) ORDER BY f.ts, f.request_id"
        )
        return [dict(r) for r in conn.execute(q)]
    finally:
        conn.close()
