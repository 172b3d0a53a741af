"""Concurrent writers on the registry and the request log, in threads and in processes: no row is
lost and "database is locked" never reaches the caller, also when several processes create the same
file at the same moment (switching a new file to WAL mode can deadlock, and SQLite answers that at
once instead of waiting) and when another writer holds the database longer than a busy timeout."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import traceback
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(90)
CTX = multiprocessing.get_context("fork")


def _in_processes(n: int, target, args_of) -> list:
    """Run target(*args_of(i), start) in n forked processes and return what each returned (an
    error fails the test). `start` is a barrier the n processes share, to act at the same moment."""
    start, results = CTX.Barrier(n, timeout=60), CTX.Queue()

    def main(i: int) -> None:
        try:
            results.put(target(*args_of(i), start))
        except BaseException:
            start.abort()  # the others stop waiting for this one
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
    assert not errors, errors[0]  # the cause first, not the processes it stopped
    return out


# ------------------------------------------------------------------ registry
def _finished_run(root: Path, name: str) -> str:
    """The least the registry needs of a finished run: a manifest saying so, a recipe, an adapter."""
    run = root / name
    (run / "adapter").mkdir(parents=True)
    (run / "recipe.yaml").write_text(f"name: {name}\n")
    (run / "manifest.json").write_text(json.dumps({"status": "done", "stages": {"train": {"status": "done"}}}))
    return str(run)


def _register_each_round(paths: list, runs: list, start) -> list:
    from tuneforge.registry import Registry

    versions = []
    for path, run in zip(paths, runs):
        start.wait()  # every process opens the new registry file at the same moment
        versions.append(Registry(path).register(run, "support")["version"])
    return versions


def test_registry_created_by_many_processes_at_once(tmp_path):
    n, rounds = 6, 30
    paths = [str(tmp_path / f"reg-{r}" / "registry.sqlite") for r in range(rounds)]
    runs = [[_finished_run(tmp_path / "runs", f"r{r}-p{i}") for r in range(rounds)] for i in range(n)]
    out = _in_processes(n, _register_each_round, lambda i: (paths, runs[i]))
    for r in range(rounds):
        assert sorted(versions[r] for versions in out) == list(range(1, n + 1)), r


def _register_many(path: str, runs: list, start) -> list:
    from tuneforge.registry import Registry

    got, errors = [], []

    def work(mine: list) -> None:
        try:
            for run in mine:
                v = Registry(path).register(run, "support")["version"]
                Registry(path).promote("support", v, alias="staging")
                got.append(v)
        except Exception:
            errors.append(traceback.format_exc())

    start.wait()
    threads = [threading.Thread(target=work, args=(runs[t::3],)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise AssertionError(errors[0])
    return got


def test_registry_writers_in_threads_and_processes_lose_nothing(tmp_path):
    from tuneforge.registry import Registry

    path = str(tmp_path / "registry.sqlite")
    n, each = 4, 6
    runs = [[_finished_run(tmp_path / "runs", f"p{i}-{k}") for k in range(each)] for i in range(n)]
    out = _in_processes(n, _register_many, lambda i: (path, runs[i]))
    versions = sorted(v for got in out for v in got)
    assert versions == list(range(1, n * each + 1))  # every run got its own number, none skipped
    reg = Registry(path)
    listed = reg.list("support")
    assert len(listed) == n * each and {r["run_dir"] for r in listed} == {
        str(Path(r).resolve()) for rs in runs for r in rs
    }
    assert len(reg.history("support")) == n * each  # every promotion recorded


# ------------------------------------------------------------------ request log
def _row(i: int, who: str) -> dict:
    return {
        "request_id": f"chatcmpl-{who}-{i}",
        "route": "/v1/chat/completions",
        "model": "tiny",
        "stream": 0,
        "n": 1,
        "status": 200,
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "latency_ms": 1.5,
    }


def _log_each_round(paths: list, who: str, start) -> int:
    from tuneforge.monitor.requestlog import RequestLog

    errors = []
    for path in paths:
        start.wait()  # every process creates the same new log at the same moment
        log = RequestLog(path, on_error=lambda: errors.append(1))
        for i in range(20):
            log.write(**_row(i, who))
        log.flush()
        log.close()
    return len(errors)


def test_request_log_created_by_many_processes_at_once(tmp_path):
    n, rounds = 6, 30
    paths = [str(tmp_path / f"log-{r}.db") for r in range(rounds)]
    assert _in_processes(n, _log_each_round, lambda i: (paths, f"p{i}")) == [0] * n
    for p in paths:
        assert sqlite3.connect(p).execute("SELECT COUNT(*) FROM requests").fetchone()[0] == n * 20


def _log_many(path: str, who: str, start) -> int:
    from tuneforge.monitor.requestlog import RequestLog, read_rows, write_feedback

    errors = []
    log = RequestLog(path, on_error=lambda: errors.append(1))
    start.wait()

    def requests(t: int) -> None:  # request handlers of one server process
        for i in range(150):
            log.write(**_row(i, f"{who}-t{t}"))

    def feedback() -> None:  # POST /v1/feedback writes on its own connection
        for i in range(30):
            write_feedback(path, f"chatcmpl-{who}-t0-{i}", "up")
            read_rows(path, 5)  # and monitoring reads meanwhile

    threads = [threading.Thread(target=requests, args=(t,)) for t in range(3)] + [threading.Thread(target=feedback)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.flush()
    log.close()
    return len(errors)


def test_request_log_writers_in_threads_and_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "requests.db")
    n = 4
    assert _in_processes(n, _log_many, lambda i: (path, f"p{i}")) == [0] * n
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == n * 3 * 150
    assert db.execute("SELECT COUNT(DISTINCT request_id) FROM requests").fetchone()[0] == n * 3 * 150
    assert db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == n * 30


def _hold_the_log(path: str, held, seconds: float) -> None:
    import time

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # a writer that keeps the database (a retention job, say)
    conn.execute("DELETE FROM requests WHERE 0")
    held.set()
    time.sleep(seconds)
    conn.execute("COMMIT")


def test_request_log_rows_wait_for_a_writer_that_holds_the_database(tmp_path):
    """Longer than the 5 s busy timeout the log used to give up after (dropping the rows)."""
    from tuneforge.monitor.requestlog import RequestLog

    path = str(tmp_path / "requests.db")
    errors = []
    log = RequestLog(path, on_error=lambda: errors.append(1))
    held = CTX.Event()
    holder = CTX.Process(target=_hold_the_log, args=(path, held, 6.0), daemon=True)
    holder.start()
    assert held.wait(30)
    for i in range(100):
        log.write(**_row(i, "held"))
    log.flush()  # returns once the holder is done and the rows are in
    holder.join()
    log.close()
    assert errors == []
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 100


def test_enable_wal_waits_out_the_lock_sqlite_does_not_wait_for():
    """The race above is timing-dependent; its mechanism, deterministically: SQLite answers the WAL
    switch of two new connections with "database is locked" at once, and that is retried."""
    from tuneforge.registry import enable_wal

    class Racing:  # what a connection that loses the race answers, twice
        calls = 0

        def execute(self, sql):
            self.calls += 1
            if self.calls <= 2:
                raise sqlite3.OperationalError("database is locked")

    conn = Racing()
    enable_wal(conn)
    assert conn.calls == 3

    class Broken:
        def execute(self, sql):
            raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):  # anything else is not waited for
        enable_wal(Broken())
