"""Server restart mid-job: a whole server (engine, jobs API, in-server worker: what `tuneforge serve
--jobs` runs) in its own process is SIGKILLed while it trains a job; a new server on the same jobs
folder resumes the job from its checkpoint once the dead server's lease has run out. The job is
neither lost nor run twice: prepared once, resumed once, succeeded once, and the new server serves it.

The servers are forked from the test (they inherit the imported libraries, so each starts in about a
second); `tuneforge serve` itself holds its jobs for 60 s leases, too long to wait for here.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import time

import pytest

from .conftest import TINY_JOB_OVERRIDES, demo_rows, wait_for

pytestmark = pytest.mark.timeout(150)


def _serve(cfg, model_dir: str, ports) -> None:
    """Child process: the server `tuneforge serve MODEL --jobs ROOT` would run, on a free port."""
    import socket

    import torch
    import uvicorn
    from deploy.helpers import KEY, load_engine

    from tuneforge.deploy.server.app import ServerSettings, create_app
    from tuneforge.jobs.routes import mount

    torch.set_num_threads(1)
    engine = load_engine(model_dir, batch_window_ms=5)
    app = create_app(engine, ServerSettings(api_keys=(KEY,), **mount(cfg)), close_engine=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    ports.put(sock.getsockname()[1])
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def _start(cfg, model_dir):
    import openai
    from deploy.helpers import KEY

    ctx = multiprocessing.get_context("fork")
    ports = ctx.Queue()
    # not daemonic: a daemonic process may not start children, and its worker starts one per job
    proc = ctx.Process(target=_serve, args=(cfg, str(model_dir), ports))
    proc.start()
    url = f"http://127.0.0.1:{ports.get(timeout=60)}"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    deadline = time.monotonic() + 60
    while True:  # the socket is bound before uvicorn serves on it
        try:
            client.models.list()
            return proc, client
        except openai.APIConnectionError:
            assert proc.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)


def test_a_server_killed_mid_job_resumes_it_after_a_restart(jobs_cfg, tiny_model_dir, tmp_path):
    from tuneforge.jobs.store import Store
    from tuneforge.run import RunDir

    cfg = dataclasses.replace(
        jobs_cfg, stale_after_s=3.0, overrides=TINY_JOB_OVERRIDES + ("training.save_steps=5",)
    )  # a 3 s lease, renewed every 0.2 s
    first, client = _start(cfg, tiny_model_dir)
    try:
        path = tmp_path / "train.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in demo_rows(32)))
        f = client.files.create(file=path.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="tiny", training_file=f.id, suffix="restarted", hyperparameters={"n_epochs": 2, "batch_size": 2}
        )
        deadline = time.monotonic() + 60
        while not list(client.fine_tuning.jobs.checkpoints.list(job.id)):
            assert first.is_alive() and time.monotonic() < deadline, "no checkpoint from the first server"
            time.sleep(0.02)
    finally:
        os.kill(first.pid, signal.SIGKILL)  # no shutdown, no hand-back: as a crashed machine
        first.join()

    store = Store(cfg.db_path)
    killed = store.get_job(job.id)
    assert killed["status"] == "running" and killed["worker"].split(":")[1] == str(first.pid)
    assert killed["attempts"] == 1

    second, client = _start(cfg, tiny_model_dir)
    try:
        done = wait_for(client, job.id, timeout=90)
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model in {m.id for m in client.models.list()}  # served by the new server
        out = client.chat.completions.create(
            model=done.fine_tuned_model, max_tokens=4, messages=[{"role": "user", "content": "hello"}]
        )
        assert out.model == done.fine_tuned_model
    finally:
        second.terminate()
        second.join(timeout=30)
        if second.is_alive():
            second.kill()

    row = store.get_job(job.id)
    assert row["attempts"] == 2 and row["worker"] is None
    messages = [e["message"] for e in store.list_events(job.id, None, 1000)[0]]
    assert messages.count("Preparing data") == 1  # the run directory was never prepared again
    assert messages.count("Fine-tuning job started") == 1
    assert sum("re-queued to resume from its last checkpoint" in m for m in messages) == 1
    resumed = [m for m in messages if m.startswith("Resuming from the checkpoint at step")]
    assert len(resumed) == 1 and resumed[0].endswith("(attempt 2)")
    assert messages.count("The job has successfully completed") == 1
    step = int(resumed[0].split()[6])
    train = RunDir(row["run_dir"]).manifest()["stages"]["train"]
    assert train["status"] == "done" and train["resumed_from"].endswith(f"checkpoint-{step}")
    assert train["steps"] == 32 and train["steps_this_session"] == 32 - step  # the rest, once
    steps = [c["step"] for c in store.list_checkpoints(job.id, None, 100)[0]]
    assert sorted(steps) == sorted(set(steps)) and max(steps) == 32
