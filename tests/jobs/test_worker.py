"""Killing the worker mid-job: the next worker resumes the job from its last checkpoint once the
killed worker's lease has run out. Plus the queue's guarantees (one owner per job, give up after
max_attempts) on the store alone."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import threading
import time

import pytest

from .conftest import TINY_JOB_OVERRIDES, demo_rows, running, wait_for, wait_until

pytestmark = pytest.mark.timeout(150)


def _work(cfg) -> None:
    from tuneforge.jobs.worker import Worker

    Worker(cfg).run_forever()


def test_killed_worker_job_resumes_from_its_checkpoint(jobs_server, tmp_path, jobs_cfg):
    from typer.testing import CliRunner

    from tuneforge.cli import app
    from tuneforge.jobs.store import Store
    from tuneforge.run import RunDir

    # no worker in the server: a separate `tuneforge jobs worker` process trains, and gets killed
    _, client = jobs_server(worker=False, overrides=TINY_JOB_OVERRIDES + ("training.save_steps=5",))
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in demo_rows(32)))
    f = client.files.create(file=path.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=f.id, suffix="resumed", hyperparameters={"n_epochs": 2, "batch_size": 2}
    )
    wait_for(client, job.id, ("queued",))

    # the worker runs in a forked process (it inherits the imported libraries, so it starts at once)
    # and is SIGKILLed as soon as it has written a checkpoint: no chance to clean up after itself.
    # Its lease is short (3 s; a heartbeat every 0.2 s), so the job can be taken over soon after.
    killed_cfg = dataclasses.replace(jobs_cfg, stale_after_s=3.0)
    # (not daemonic: a daemonic process may not start children, and the worker trains in one per job)
    proc = multiprocessing.get_context("fork").Process(target=_work, args=(killed_cfg,))
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while not list(client.fine_tuning.jobs.checkpoints.list(job.id)):
            assert proc.is_alive(), "the worker process died on its own"
            assert time.monotonic() < deadline, "no checkpoint from the worker process"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    # the job's training process outlives the worker only until its next step: the worker is gone
    events = client.fine_tuning.jobs.list_events(job.id, limit=100)
    [pid] = [e.data["pid"] for e in events if (e.data or {}).get("pid")]
    assert pid != proc.pid
    wait_until(lambda: not running(pid), "the orphaned training process to stop", timeout=20)

    store = Store(jobs_cfg.db_path)
    killed = store.get_job(job.id)
    assert killed["status"] == "running" and killed["worker"].split(":")[1] == str(proc.pid)
    steps_before = max(
        e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"
    )
    assert steps_before < 32  # killed mid-job (32 rows / batch 2 × 2 epochs = 32 steps)
    # nobody takes the job over while its lease runs: a live worker may hold it
    assert store.recover(jobs_cfg.max_attempts, now=killed["lease_until"] - 0.5) == []
    while time.time() <= killed["lease_until"]:
        time.sleep(0.05)

    # a new worker (`tuneforge jobs worker`) sees the expired lease, re-queues the job, resumes it
    res = CliRunner().invoke(app, ["jobs", "worker", "--root", jobs_cfg.root, "--once", "--poll", "0.05"])
    assert res.exit_code == 0, res.output
    assert f"{job.id}: succeeded → ft:tiny:resumed:" in res.output
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any("stopped" in m and "re-queued to resume" in m for m in messages)
    resumed = [m for m in messages if m.startswith("Resuming from the checkpoint at step")]
    assert resumed == [f"Resuming from the checkpoint at step {int(resumed[0].split()[6])} (attempt 2)"]
    step = int(resumed[0].split()[6])
    train = RunDir(store.get_job(job.id)["run_dir"]).manifest()["stages"]["train"]
    assert train["status"] == "done" and train["resumed_from"].endswith(f"checkpoint-{step}")
    assert train["steps"] == 32 and train["steps_this_session"] == 32 - step
    assert 5 <= step <= steps_before

    # the server picks up the model another process trained, and serves it
    deadline = time.monotonic() + 20
    while done.fine_tuned_model not in {m.id for m in client.models.list()}:
        assert time.monotonic() < deadline, "the server did not load the fine-tuned model"
        time.sleep(0.05)
    out = client.chat.completions.create(
        model=done.fine_tuned_model, max_tokens=4, messages=[{"role": "user", "content": "hello"}]
    )
    assert out.model == done.fine_tuned_model
    listing = CliRunner().invoke(app, ["jobs", "list", "--root", jobs_cfg.root])
    assert listing.exit_code == 0 and job.id in listing.output and "succeeded" in listing.output


# ------------------------------------------------------------------ the queue on its own
def _queued_job(store, job_id: str = "ftjob-000000000000000000000001") -> str:
    store.add_job(
        {
            "id": job_id,
            "status": "queued",
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


def test_two_workers_never_claim_the_same_job(tmp_path):
    from tuneforge.jobs.store import Store

    store = Store(tmp_path / "jobs.db")
    jobs = {_queued_job(store, f"ftjob-{i:024d}") for i in range(20)}
    got: dict[str, list] = {"a": [], "b": [], "c": []}

    def take(name: str) -> None:
        while (job := Store(tmp_path / "jobs.db").claim(f"host:1:{name}")) is not None:
            got[name].append(job["id"])

    threads = [threading.Thread(target=take, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [j for ids in got.values() for j in ids]
    assert sorted(claimed) == sorted(jobs)  # every job once, none twice
    assert all(store.get_job(j)["status"] == "running" for j in jobs)


def test_a_job_whose_worker_keeps_dying_fails_with_the_reason(tmp_path):
    from tuneforge.jobs.store import Store

    store = Store(tmp_path / "jobs.db")
    jid = _queued_job(store)
    for attempt in (1, 2):
        job = store.claim(f"host:1:w{attempt}", lease_s=60)
        assert job["attempts"] == attempt
        [(_, what)] = store.recover(max_attempts=2, now=job["lease_until"] + 1)  # the lease ran out
        assert what == ("requeued" if attempt == 1 else "failed")
    row = store.get_job(jid)
    assert row["status"] == "failed" and row["error"]["code"] == "worker_lost"
    assert "giving up after 2 attempt(s)" in row["error"]["message"]
    # a live worker's job, within its lease, is left alone
    jid2 = _queued_job(store, "ftjob-000000000000000000000002")
    alive = store.claim("host:1:alive", lease_s=60)
    assert store.recover(max_attempts=2, now=alive["lease_until"] - 1) == []
    assert store.get_job(jid2)["status"] == "running"
    # a cancelled job cannot be written by the worker that still runs it
    assert store.cancel(jid2)
    assert not store.update_owned(jid2, alive["token"], status="succeeded")
    assert store.get_job(jid2)["status"] == "cancelled"
