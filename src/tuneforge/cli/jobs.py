"""`tuneforge jobs …`: the fine-tuning jobs queue from the command line.

tuneforge serve runs/demo --jobs tuneforge-jobs          the API (+ a worker thread) on the server
tuneforge jobs worker --root tuneforge-jobs              more workers, other processes or machines
tuneforge jobs list --root tuneforge-jobs                what is queued, running and done
tuneforge jobs events JOB_ID                             a job's log, oldest first
tuneforge jobs cancel JOB_ID
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import console, err

jobs_app = typer.Typer(no_args_is_help=True, help="Fine-tuning jobs (the OpenAI-compatible jobs API's queue).")
ROOT_HELP = "Jobs folder (jobs.db, files/, runs/) — the one given to `tuneforge serve --jobs`."


def _store(root: Path):
    from ..jobs.spec import JobsConfig
    from ..jobs.store import Store

    cfg = JobsConfig(root=str(root))
    if not cfg.db_path.is_file():
        err.print(
            f"error: {cfg.db_path} does not exist — start `tuneforge serve --jobs {root}` first, or pass --root",
            highlight=False,
        )
        raise typer.Exit(code=2)
    return Store(cfg.db_path)


def _when(ts: Optional[int]) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@jobs_app.command("worker")
def worker(
    root: Path = typer.Option(Path("tuneforge-jobs"), "--root", help=ROOT_HELP),
    overrides: Optional[list[str]] = typer.Option(
        None, "--set", help="Recipe override for the jobs this worker starts, e.g. training.threads=2 (repeatable)."
    ),
    once: bool = typer.Option(False, "--once", help="Exit when the queue is empty instead of waiting."),
    poll: float = typer.Option(1.0, help="Seconds between looks at an empty queue."),
    stale_after: float = typer.Option(
        60.0, help="A running job whose worker sent no heartbeat for this long is taken over and resumed."
    ),
    max_attempts: int = typer.Option(3, help="Runs of one job before it is failed."),
):
    """Run queued fine-tuning jobs, one at a time; a killed worker's job is resumed from its checkpoint."""
    from ..jobs.spec import JobsConfig
    from ..jobs.worker import Worker

    _store(root)
    cfg = JobsConfig(root=str(root), poll_s=poll, stale_after_s=stale_after, max_attempts=max_attempts)
    w = Worker(cfg, overrides=tuple(overrides or ()), log=lambda msg: console.print(msg, highlight=False))
    console.print(f"jobs worker {w.id} on {cfg.db_path}" + (" (until the queue is empty)" if once else ""))
    try:
        w.run_forever(until_idle=once)
    except KeyboardInterrupt:  # the running job was handed back to the queue by the worker
        err.print("stopped; an interrupted job is queued again and resumes from its last checkpoint")
        raise typer.Exit(code=130) from None


@jobs_app.command("list")
def list_jobs(
    root: Path = typer.Option(Path("tuneforge-jobs"), "--root", help=ROOT_HELP),
    status: Optional[str] = typer.Option(None, help="Only jobs in this status."),
    limit: int = typer.Option(20, help="Newest N jobs."),
):
    """The newest jobs: status, base model, result, timings."""
    rows, more = _store(root).list_jobs(limit=limit, status=status)
    t = Table()
    t.add_column("id", no_wrap=True, min_width=30)  # ids are what the other commands take: never cut
    t.add_column("status", no_wrap=True, min_width=10)
    for col in ("model", "fine-tuned model", "created (UTC)", "finished", "attempts", "error"):
        t.add_column(col)
    for j in rows:
        t.add_row(
            j["id"],
            j["status"],
            j["model"],
            j["fine_tuned_model"] or "-",
            _when(j["created_at"]),
            _when(j["finished_at"]),
            str(j["attempts"]),
            (j["error"] or {}).get("message", "")[:80],
        )
    console.print(t)
    if more:
        console.print(f"(more: --limit {limit * 2})")


@jobs_app.command("events")
def events(
    job_id: str = typer.Argument(..., help="Job id (ftjob-…)."),
    root: Path = typer.Option(Path("tuneforge-jobs"), "--root", help=ROOT_HELP),
):
    """A job's events, oldest first."""
    store = _store(root)
    if store.get_job(job_id) is None:
        err.print(f"error: no job '{job_id}' in {store.path}", highlight=False)
        raise typer.Exit(code=2)
    rows, _ = store.list_events(job_id, None, 100_000)
    for e in reversed(rows):
        print(f"{_when(e['created_at'])}  {e['level']:5}  {e['message']}")


@jobs_app.command("cancel")
def cancel(
    job_id: str = typer.Argument(..., help="Job id (ftjob-…)."),
    root: Path = typer.Option(Path("tuneforge-jobs"), "--root", help=ROOT_HELP),
):
    """Cancel a job; a running one stops at its next training step."""
    store = _store(root)
    job = store.get_job(job_id)
    if job is None or not store.cancel(job_id):
        err.print(
            f"error: job '{job_id}' " + ("does not exist" if job is None else f"has already {job['status']}"),
            highlight=False,
        )
        raise typer.Exit(code=2)
    console.print(f"{job_id}: cancelled")
