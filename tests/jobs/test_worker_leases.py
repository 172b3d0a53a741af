"""The worker on real tiny-model jobs (no HTTP): graceful stops hand the job back without using up
an attempt, a worker whose job was taken over stops and writes nothing more, what follows training
never leaves a job looping, and logs/metrics.jsonl is read whatever its last line."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from .conftest import wait_until as _wait

pytestmark = pytest.mark.timeout(90)


def _messages(store, jid: str) -> list[str]:
    return [e["message"] for e in store.list_events(jid, None, 1000)[0]]


def test_graceful_restarts_hand_the_job_back_without_using_up_an_attempt(jobs_cfg, new_job):
    from tuneforge.jobs.store import Store
    from tuneforge.jobs.worker import Worker

    cfg = dataclasses.replace(jobs_cfg, max_attempts=1)  # one crash would fail it; restarts must not count
    jid = new_job(32, n_epochs=2, batch_size=2)  # 32 steps, a checkpoint every 2
    store = Store(cfg.db_path)
    for restart in (1, 2):
        seen = len(store.list_checkpoints(jid, None, 100)[0])
        worker = Worker(cfg).start()
        _wait(lambda: len(store.list_checkpoints(jid, None, 100)[0]) > seen, "a new checkpoint")  # noqa: B023
        assert store.get_job(jid)["worker"] == worker.id
        worker.stop()  # what `serve` does on shutdown: the job goes back to the queue
        row = store.get_job(jid)
        assert row["status"] == "queued" and row["worker"] is None and row["resume"] == 1, restart
        assert row["attempts"] == 0, f"restart {restart} used up an attempt"
    Worker(cfg).run_forever(until_idle=True)
    row = store.get_job(jid)
    assert row["status"] == "succeeded" and row["attempts"] == 1, row["error"]
    messages = _messages(store, jid)
    assert sum("shutting down; job re-queued" in m for m in messages) == 2
    resumed = [m for m in messages if m.startswith("Resuming from the checkpoint")]
    assert len(resumed) == 2 and all(m.endswith("(attempt 1)") for m in resumed)
    assert messages.count("Preparing data") == 1  # prepared once: never wiped and started over


def test_a_worker_whose_job_was_taken_over_stops_and_writes_nothing(jobs_cfg, new_job):
    from tuneforge.jobs.store import Store
    from tuneforge.jobs.worker import Worker

    jid = new_job(48, n_epochs=20, batch_size=1)  # long enough to be running when it is taken over
    store = Store(jobs_cfg.db_path)
    stale = Worker(jobs_cfg)
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("job", stale.run_once()), daemon=True)
    thread.start()
    _wait(lambda: any(e["type"] == "metrics" for e in store.list_events(jid, None, 5)[0]), "training steps")

    # as if its lease had run out (a frozen VM, a partitioned disk): recovered and claimed by another
    [(_, what)] = store.recover(jobs_cfg.max_attempts, now=time.time() + 10 * jobs_cfg.stale_after_s)
    assert what == "requeued"
    new = store.claim("other-host:1:new", lease_s=600)
    assert new["id"] == jid
    events_then = len(store.list_events(jid, None, 1000)[0])
    ckpts_then = len(store.list_checkpoints(jid, None, 1000)[0])

    thread.join(timeout=30)
    assert not thread.is_alive(), "the stale worker kept training"
    row = store.get_job(jid)
    assert row["status"] == "running" and row["worker"] == "other-host:1:new" and row["token"] == new["token"]
    assert out["job"]["status"] == "running"  # what it returned: the job as the new owner holds it
    assert len(store.list_events(jid, None, 1000)[0]) == events_then  # no metrics, no "stopped" event
    assert len(store.list_checkpoints(jid, None, 1000)[0]) == ckpts_then
    assert row["error"] is None and row["fine_tuned_model"] is None


def test_a_failure_after_training_is_a_warning_not_a_retry(jobs_cfg, new_job, monkeypatch):
    import tuneforge.registry
    from tuneforge.jobs.store import Store
    from tuneforge.jobs.worker import Worker

    def broken_result_file(self, run):
        raise OSError("No space left on device: 'step_metrics.csv'")

    def broken_register(run, path=None, log=print):
        raise RuntimeError("registry unreachable")

    monkeypatch.setattr(Worker, "_result_file", broken_result_file)
    monkeypatch.setattr(tuneforge.registry, "maybe_register", broken_register)

    def unservable(name, run_dir):
        raise ValueError("cannot serve")

    jid = new_job(8, n_epochs=1, batch_size=4)
    worker = Worker(jobs_cfg, on_model=unservable)
    done = worker.run_once()
    assert done["id"] == jid and done["status"] == "succeeded" and done["worker"] is None
    assert done["result_files"] == [] and done["fine_tuned_model"]
    warnings = [e["message"] for e in Store(jobs_cfg.db_path).list_events(jid, None, 100)[0] if e["level"] == "warn"]
    assert any("result file" in m and "No space left" in m for m in warnings)
    assert any("registered" in m and "registry unreachable" in m for m in warnings)
    assert any("serving" in m and "cannot serve" in m for m in warnings)
    assert worker.run_once() is None  # nothing left to do: the job is not picked up again


def test_recording_the_result_failing_fails_the_job_with_the_reason(jobs_cfg, new_job, monkeypatch):
    """Even the last write failing once (a database error) ends the job, never leaves it running."""
    from tuneforge.jobs.store import Store
    from tuneforge.jobs.worker import Worker

    real = Store.update_owned

    def flaky(self, job_id, token, events=(), **fields):
        if fields.get("status") == "succeeded":
            raise OSError("disk I/O error")
        return real(self, job_id, token, events, **fields)

    monkeypatch.setattr(Store, "update_owned", flaky)
    jid = new_job(8, n_epochs=1, batch_size=4)
    done = Worker(jobs_cfg).run_once()
    assert done["id"] == jid and done["status"] == "failed" and done["worker"] is None
    assert done["error"]["message"].startswith("training finished, but recording its result failed: OSError")


# ------------------------------------------------------------------ logs/metrics.jsonl
def test_metrics_rows_leave_out_a_torn_last_line_only():
    from tuneforge.train.callbacks import metrics_rows

    rows = [{"step": i, "loss": 1.0 / i} for i in (1, 2, 3)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    assert metrics_rows(text) == rows
    assert metrics_rows(text + '{"step": 4, "lo') == rows  # being appended, or the writer was killed
    assert metrics_rows(text + json.dumps({"step": 4})) == rows + [{"step": 4}]  # whole, newline still to come
    assert metrics_rows("") == [] and metrics_rows("\n\n") == []
    for bad in ('{"step": 2, "lo\n', "[1, 2]\n", "not json\n"):  # a bad complete line is never skipped
        with pytest.raises(ValueError, match="line 2"):
            metrics_rows(json.dumps(rows[0]) + "\n" + bad + json.dumps(rows[2]) + "\n")


def test_the_result_file_is_written_from_a_metrics_log_with_a_torn_last_line(jobs_cfg):
    from tuneforge.jobs.store import Store
    from tuneforge.jobs.worker import Worker

    class Run:
        metrics_file = Path(jobs_cfg.root) / "runs" / "x" / "logs" / "metrics.jsonl"

    Run.metrics_file.parent.mkdir(parents=True)
    good = [{"step": 1, "epoch": 0.5, "loss": 2.0, "learning_rate": 0.05}, {"step": 2, "epoch": 1.0, "eval_loss": 1.5}]
    Run.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"step": 3, "loss": 1.')
    fid = Worker(jobs_cfg)._result_file(Run())
    csv_text = Path(Store(jobs_cfg.db_path).get_file(fid)["path"]).read_text()
    assert csv_text.splitlines() == [
        "step,epoch,train_loss,valid_loss,learning_rate",
        "1,0.5,2.0,,0.05",
        "2,1.0,,1.5,",
    ]
