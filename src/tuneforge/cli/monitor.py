"""`tuneforge monitor check|report` and `tuneforge data from-feedback` (stage 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import console, err, guard

app = typer.Typer(no_args_is_help=True, help="Stage 7: serving statistics, output checks and prompt drift.")

LogOpt = typer.Option(Path("tuneforge-requests.db"), "--log", help="The server's SQLite request log.")
RunOpt = typer.Option(None, "--run", help="Run directory whose training prompts drift is measured against.")
ConfigOpt = typer.Option(None, "--config", "-c", help="monitor.yaml with windows/thresholds/drift sections.")
AdapterOpt = typer.Option(None, "--adapter", help="Only requests served by this adapter (or base model name).")
SinceOpt = typer.Option(None, "--since-hours", help="Only the last N hours (overrides windows.since_hours).")
EmbedderOpt = typer.Option(None, "--embedder", help="minilm | hashing (overrides drift.embedder).")


def _check(
    log: Path,
    run: Optional[Path],
    config: Optional[Path],
    adapter: Optional[str],
    since_hours: Optional[float],
    embedder: Optional[str],
) -> dict:
    from ..monitor.check import run_check
    from ..monitor.config import load_config

    cfg = guard(load_config, config, {"windows.since_hours": since_hours, "drift.embedder": embedder})
    return guard(run_check, log, cfg, run, adapter)


def _print(res: dict) -> None:
    from rich.table import Table

    t = Table(
        "adapter",
        "requests",
        "errors",
        "p50 ms",
        "p95 ms",
        "req/s",
        "tokens in/out",
        "truncated",
        "empty",
        "refusal",
        "bad JSON",
    )

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}%"

    def num(v):
        return "–" if v is None else f"{v:.4g}"

    for name, s in [("all", res["overall"]), *res["adapters"].items()]:
        t.add_row(
            name,
            str(s["requests"]),
            pct(s["error_rate"]),
            num(s["latency_p50_ms"]),
            num(s["latency_p95_ms"]),
            num(s["requests_per_s"]),
            f"{s['prompt_tokens']}/{s['completion_tokens']}",
            pct(s["truncated_rate"]),
            pct(s["empty_rate"]),
            pct(s["refusal_rate"]),
            pct(s.get("invalid_json_rate")),
        )
    console.print(t)
    d = res.get("drift")
    if d and d.get("skipped"):
        console.print(f"drift: skipped — {d['skipped']}")
    elif d:
        console.print(
            f"drift ({d['embedder']}, {d['distinct_recent_prompts']} distinct recent vs {d['reference_prompts']} training "
            f"prompts): MMD p={d['embedding']['p_value']:.4g}, length KS D={d['length']['statistic']:.3f}, "
            f"topic TVD={d['topics']['tvd']:.3f}, new topics {100 * d['topics']['new_topic_rate']:.0f}%",
            highlight=False,
        )
    for b in res["breaches"]:
        err.print(f"[bold red]breach:[/] {b['message']}", markup=True, highlight=False)
    if res["ok"]:
        console.print("[green]ok[/]: no threshold crossed")


@app.command("check")
def check(
    log: Path = LogOpt,
    run: Optional[Path] = RunOpt,
    config: Optional[Path] = ConfigOpt,
    adapter: Optional[str] = AdapterOpt,
    since_hours: Optional[float] = SinceOpt,
    embedder: Optional[str] = EmbedderOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
):
    """Check the request log against thresholds (and drift against RUN); exits 1 when one is breached."""
    res = _check(log, run, config, adapter, since_hours, embedder)
    if as_json:
        res = {**res, "drift": res["drift"] and {k: v for k, v in res["drift"].items() if k != "projection"}}
        print(json.dumps(res, indent=2, default=str))
    else:
        _print(res)
    if not res["ok"]:
        raise typer.Exit(code=1)


@app.command("report")
def report(
    log: Path = LogOpt,
    run: Optional[Path] = RunOpt,
    config: Optional[Path] = ConfigOpt,
    adapter: Optional[str] = AdapterOpt,
    since_hours: Optional[float] = SinceOpt,
    embedder: Optional[str] = EmbedderOpt,
    out: Path = typer.Option(Path("monitor-report.html"), "--out", "-o", help="HTML file to write."),
):
    """Write a self-contained HTML report (tables + plots) of the same checks."""
    from ..monitor.report import write_report

    res = _check(log, run, config, adapter, since_hours, embedder)
    lengths = None
    if run is not None and res["drift"] and not res["drift"].get("skipped"):
        from ..io import read_jsonl
        from ..monitor.drift import training_prompts
        from ..monitor.stats import load_requests, prompt_text
        from ..run import RunDir

        ref = training_prompts(read_jsonl(RunDir(run).split_file("train")))
        recent = [t for r in load_requests(log, None, adapter) if r["status"] < 400 and (t := prompt_text(r["prompt"]))]
        lengths = ([len(t) for t in ref], [len(t) for t in recent])
    write_report(res, out, lengths)
    console.print(f"report → {out} ({'ok' if res['ok'] else str(len(res['breaches'])) + ' breach(es)'})")


def from_feedback_cmd(
    log: Path = LogOpt,
    output: Path = typer.Option(..., "--output", "-o", help="SFT rows (messages JSONL)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Preference rows (default: OUTPUT.preference.jsonl)."),
    run: Optional[Path] = typer.Option(None, "--run", help="Deduplicate against this run's training split."),
    against: Optional[list[Path]] = typer.Option(
        None, "--against", help="Other existing data to deduplicate against (repeatable)."
    ),
    threshold: float = typer.Option(0.8, help="Near-duplicate similarity (as data.dedup_threshold)."),
    allow: Optional[list[str]] = typer.Option(None, "--allow", help="A string never to redact (repeatable)."),
):
    """Feedback in the request log → SFT rows (corrections) + preference pairs; PII-redacted, deduplicated."""
    from ..monitor.feedback_data import from_feedback

    res = guard(from_feedback, log, output, pairs, run, against or [], threshold, pii_allow=allow or [])
    console.print(
        f"{res['feedback']} feedback row(s) → {res['sft_rows']} SFT row(s) in {res['sft_out']}, "
        f"{res['preference_rows']} preference row(s) in {res['preference_out']}",
        highlight=False,
    )
    console.print_json(json.dumps({k: res[k] for k in ("skipped", "dropped", "pii_redacted")}))
