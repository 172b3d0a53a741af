"""Fixtures for the fine-tuning jobs API: a tiny-model engine, a jobs folder, data files, a live server.

tests/jobs is a package, so this file is `jobs.conftest` and does not shadow tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from deploy.conftest import one_thread  # noqa: F401 (autouse: one torch thread, the CPU is shared)
from deploy.helpers import KEY, live_server, load_engine

DEMO = Path(__file__).parent.parent.parent / "examples" / "demo"
# every job on the tiny model: small LoRA, a learning rate that moves it, a checkpoint every 2 steps,
# one thread (the CPU is shared) — the server's job defaults, as `--jobs-set` gives them
TINY_JOB_OVERRIDES = (
    "strategy.r=8",
    "strategy.alpha=16",
    "training.learning_rate=0.05",
    "training.logging_steps=1",
    "training.precision=fp32",
    "training.save_strategy=steps",
    "training.save_steps=2",
    "training.threads=1",
    "data.max_length=128",
    "data.dedup=exact",
    # replay of a random model's answers adds noise rows that change the step counts these tests
    # assert; replay itself is tested in tests/data/test_forgetting_data.py
    "data.replay.enabled=false",
    "data.plots=false",
)


@pytest.fixture
def jobs_cfg(tmp_path):
    from tuneforge.jobs.spec import JobsConfig

    return JobsConfig(
        root=str(tmp_path / "jobs"), overrides=TINY_JOB_OVERRIDES, poll_s=0.05, heartbeat_s=0.2, stale_after_s=30.0
    )


def demo_rows(n: int) -> list[dict]:
    return [json.loads(line) for line in (DEMO / "train.jsonl").read_text().splitlines()[:n]]


@pytest.fixture
def train_file(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in demo_rows(16)))
    return path


@pytest.fixture
def new_job(jobs_cfg, tiny_model_dir):
    """new_job(rows, seed=None, **hyperparameters) -> a validated, queued job id, through the service (as the API)."""
    from tuneforge.jobs.service import JobService
    from tuneforge.jobs.spec import CreateJobRequest

    service = JobService(jobs_cfg, {"tiny": str(tiny_model_dir)})

    def make(rows: int = 16, seed=None, **hp) -> str:
        data = "".join(json.dumps(r) + "\n" for r in demo_rows(rows)).encode()
        f = service.add_file("train.jsonl", "fine-tune", io.BytesIO(data))
        req = CreateJobRequest(model="tiny", training_file=f["id"], hyperparameters=hp or None, seed=seed)
        job = service.create_job(req)
        assert service.validate(job["id"])["status"] == "queued"
        return job["id"]

    return make


def wait_until(cond, what: str, timeout: float = 60.0):
    """Poll `cond()` until it is truthy; its value."""
    import time

    deadline = time.monotonic() + timeout
    while not (out := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return out


def running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie nobody has reaped yet does not; Linux's /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture
def engine(tiny_model_dir):
    """A fresh engine per test: fine-tuned models are hot-loaded into it."""
    eng = load_engine(tiny_model_dir, batch_window_ms=5)
    yield eng
    eng.close()


@pytest.fixture
def jobs_server(engine, jobs_cfg, tmp_path):
    """jobs_server(**jobs_cfg changes) -> (base url, openai client) of a live server with the jobs API."""
    import dataclasses

    import openai

    from tuneforge.deploy.server.app import ServerSettings, create_app
    from tuneforge.jobs.routes import mount

    stack = contextlib.ExitStack()

    def start(**changes):
        cfg = dataclasses.replace(jobs_cfg, **changes)
        app = create_app(
            engine, ServerSettings(api_keys=(KEY,), request_log=str(tmp_path / "requests.db"), **mount(cfg))
        )
        url = stack.enter_context(live_server(app))
        return url, openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)

    yield start
    stack.close()


def wait_for(client, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 60.0):
    """Poll a job (as a client would) until it reaches one of `statuses`."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")
        time.sleep(0.05)
