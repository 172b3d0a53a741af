"""`tuneforge serve --jobs …` wiring and the `tuneforge jobs` commands on an existing queue."""

from __future__ import annotations

from typer.testing import CliRunner

from tuneforge.cli import app


def test_serve_jobs_options_reach_the_server_settings(monkeypatch, tmp_path):
    from tuneforge.deploy.server import launch
    from tuneforge.jobs.spec import JobsConfig

    seen = {}
    monkeypatch.setattr(
        launch,
        "serve",
        lambda target, adapters, host, port, settings, *a, **kw: seen.update(target=target, settings=settings),
    )
    res = CliRunner().invoke(
        app,
        [
            "serve",
            "some-base",
            "--api-key",
            "k",
            "--jobs",
            str(tmp_path / "q"),
            "--no-jobs-worker",
            "--jobs-set",
            "training.threads=2",
        ],
    )
    assert res.exit_code == 0, res.output
    cfg = seen["settings"].routers[0].cfg  # the jobs API, mounted by the CLI (jobs.routes.mount)
    assert isinstance(cfg, JobsConfig) and cfg.root == str(tmp_path / "q") and cfg.worker is False
    assert cfg.overrides == ("training.threads=2",) and cfg.base_recipe().training.threads == 2


def test_jobs_commands_list_show_and_cancel(tmp_path):
    from tuneforge.jobs.store import Store

    root = tmp_path / "q"
    missing = CliRunner().invoke(app, ["jobs", "list", "--root", str(root)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    store = Store(root / "jobs.db")
    store.add_job(
        {
            "id": "ftjob-000000000000000000000001",
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
        "Created fine-tuning job: ftjob-000000000000000000000001",
    )
    listing = CliRunner().invoke(app, ["jobs", "list", "--root", str(root)])
    assert listing.exit_code == 0 and "ftjob-000000000000000000000001" in listing.output and "queued" in listing.output
    out = CliRunner().invoke(app, ["jobs", "cancel", "ftjob-000000000000000000000001", "--root", str(root)])
    assert out.exit_code == 0 and store.get_job("ftjob-000000000000000000000001")["status"] == "cancelled"
    again = CliRunner().invoke(app, ["jobs", "cancel", "ftjob-000000000000000000000001", "--root", str(root)])
    assert again.exit_code == 2 and "already cancelled" in again.output
    events = CliRunner().invoke(app, ["jobs", "events", "ftjob-000000000000000000000001", "--root", str(root)])
    lines = [line.split("  ", 2)[-1].strip() for line in events.output.splitlines()]
    assert lines == ["Created fine-tuning job: ftjob-000000000000000000000001", "Fine-tuning job cancelled"]
