"""tuneforge command line: a thin layer over the stage functions."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from . import common

# the command groups: Typer apps only, no heavy imports (those stay inside each command)
from .jobs import jobs_app as _jobs_app
from .monitor import app as _monitor_app
from .monitor import from_feedback_cmd as _from_feedback
from .rag import compare_approaches_cmd as _compare_approaches
from .rag import rag_app as _rag_app
from .registry import app as _registry_app

app = typer.Typer(
    cls=common.ErrorGroup,
    add_completion=False,
    no_args_is_help=True,
    help="tuneforge: prepare data, fine-tune, evaluate, export and chat — one run directory per run.",
)


@app.callback()
def _root(
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Allow a model folder's custom code (config auto_map) to run on load — read that code first. "
        "Never taken from a recipe; same as TUNEFORGE_TRUST_REMOTE_CODE=1 (which child processes inherit).",
    ),
):
    if trust_remote_code:
        from ..lm.load import REMOTE_CODE_ENV

        os.environ[REMOTE_CODE_ENV] = "1"


recipe_app = typer.Typer(no_args_is_help=True, help="Validate and explain recipes.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect, prepare, redact and augment data.")
app.add_typer(recipe_app, name="recipe")
app.add_typer(data_app, name="data")
review_app = typer.Typer(no_args_is_help=True, help="Blind human A/B review of two runs' answers.")
app.add_typer(review_app, name="review")

app.add_typer(_registry_app, name="registry")
app.add_typer(_monitor_app, name="monitor")
data_app.command("from-feedback")(_from_feedback)

app.add_typer(_rag_app, name="rag")

app.add_typer(_jobs_app, name="jobs")
app.command("compare-approaches")(_compare_approaches)
console, err = common.console, common.err
_fail, _guard, _run_dir = common.fail, common.guard, common.run_dir


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides, e.g. training.epochs=1"),
    overwrite: bool = typer.Option(False, help="Start over if the run directory exists with another recipe."),
):
    """Run every stage: prepare → train → evaluate → export."""
    from ..pipeline import run_all
    from ..recipe import load_recipe

    r = _guard(load_recipe, recipe, overrides or [])
    summary = _guard(run_all, r, overwrite, console.print)
    _print_summary(summary)


def _print_summary(s: dict) -> None:
    t = Table(title="tuneforge run summary", show_header=False)
    ev = s.get("eval", {})
    if "base" in ev and "fact_accuracy" in ev["base"]:
        t.add_row("base fact accuracy", f"{100 * ev['base']['fact_accuracy']:.1f}%")
    if "tuned" in ev and "fact_accuracy" in ev["tuned"]:
        t.add_row("tuned fact accuracy", f"{100 * ev['tuned']['fact_accuracy']:.1f}%")
    for name, res in (s.get("preference") or {}).items():  # held-out pairs: chosen preferred over rejected
        if isinstance(res, dict) and res.get("accuracy") is not None:
            t.add_row(
                f"preference accuracy ({name.replace('_', ' ')})",
                f"{100 * res['accuracy']:.1f}% of {res['pairs']} pairs",
            )
    if s.get("regression"):
        reg = s["regression"]
        t.add_row("general prompts (base → tuned)", f"{100 * reg.get('base', 0):.0f}% → {100 * reg['tuned']:.0f}%")
    una = s.get("unanswerable") or {}
    if una.get("tuned"):
        rates = [f"{100 * una[m]['hallucination_rate']:.0f}%" for m in ("base", "tuned") if m in una]
        t.add_row("unanswerable, hallucination", " → ".join(rates))
    tr = s["train"]
    if "reward_first" in tr:  # RL objectives (ppo) report the mean reward, not a loss
        t.add_row(
            "training",
            f"{tr['steps']} iterations, mean reward {tr['reward_first']} → {tr['reward_last']} "
            f"(held-out {tr.get('eval_reward_before')} → {tr.get('eval_reward_after')}), {tr['seconds']} s",
        )
    else:
        t.add_row(
            "training",
            f"{tr['steps']} steps, first loss {tr['first_loss'] or float('nan'):.4g} → mean {tr['train_loss']:.4g}, "
            f"{tr['tokens_per_second']} tok/s, {tr['seconds']} s",
        )
    if "export" in s:
        gc = s["export"]["golden_check"]
        t.add_row("export", ", ".join(s["export"]["artefacts"].values()) + f" (golden prompts: {gc['result']})")
    t.add_row("run directory", s["run"])
    t.add_row("wall time", f"{s['seconds']} s")
    console.print(t)
    console.print(f'Chat with it:  tuneforge chat {s["run"]}   (or --prompt "…" for one answer)')
    console.print(f"Report:        {s['run']}/eval/report.md")


@app.command()
def prepare(
    recipe: Path = typer.Argument(..., help="Recipe YAML."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides."),
    overwrite: bool = typer.Option(False, help="Start over if the run directory exists with another recipe."),
):
    """Stage 1: validate, split and check the data; creates the run directory."""
    from ..pipeline import prepare_stage
    from ..recipe import load_recipe

    r = _guard(load_recipe, recipe, overrides or [])
    run_, card = _guard(prepare_stage, r, overwrite)
    console.print((run_.data_dir / "data_card.md").read_text())
    console.print(f"run directory: {run_.path}")


@app.command()
def train(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last complete checkpoint."),
    accelerate_config: Optional[Path] = typer.Option(
        None,
        "--accelerate-config",
        help="Train under `accelerate launch` with this config "
        "(e.g. recipes/accelerate/ddp-gpu.yaml); see docs/scale-out.md.",
    ),
):
    """Stages 3-4: fine-tune the run's model on its prepared data."""
    from ..dist import is_main_process
    from ..train.dispatch import train_run as _train
    from ..train.distributed import launch

    if accelerate_config is not None:
        raise typer.Exit(code=_guard(launch, accelerate_config, _run_dir(run_dir).path, resume))
    info = _guard(_train, _run_dir(run_dir), resume)
    if is_main_process():  # one summary, not one per process
        console.print_json(json.dumps(info, default=str))


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    base: bool = typer.Option(True, "--base/--no-base", help="Also evaluate the base model."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="Another run to compare with, side by side."),
):
    """Stage 5: every suite, base vs tuned; writes eval/report.md; exits 1 when a gate is unmet."""
    from ..evaluate.compare import compare_runs
    from ..evaluate.runner import evaluate as _evaluate

    run_ = _run_dir(run_dir)
    other = _run_dir(compare) if compare is not None else None
    report = _guard(_evaluate, run_, None, base, False)
    from ..registry import maybe_register

    maybe_register(run_, log=lambda msg: err.print(msg, highlight=False))  # new metrics and gate status
    console.print((Path(run_dir) / "eval" / "report.md").read_text())
    if other is not None:
        if not (other.eval_dir / "report.json").is_file():  # evaluate the other run once, with its own recipe
            _guard(_evaluate, other, None, None, False)
        res = _guard(compare_runs, run_.path, other.path)
        console.print((run_.eval_dir / f"compare-{other.path.name}.md").read_text())
        console.print(
            f"comparison: {run_.eval_dir / f'compare-{other.path.name}.json'} "
            f"({len(res['examples']['a_only'])} right only in A, {len(res['examples']['b_only'])} only in B)"
        )
    gates = report.get("gates")
    if gates and not gates["passed"]:
        unmet = [r["text"] for r in gates["results"] if not r["passed"]]
        err.print(
            f"[bold red]rejected:[/] unmet gate(s): {'; '.join(unmet)} — manifest status is 'rejected'",
            markup=True,
            highlight=False,
        )
        raise typer.Exit(code=1)
    return report


@review_app.command("export")
def review_export(
    run_a: Path = typer.Argument(..., help="Run A (its tuned answers)."),
    run_b: str = typer.Argument(..., help="Run B, or 'base' for run A's base-model answers."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for index.html, items.csv, key.json."),
    seed: int = typer.Option(0, help="Seed of the side randomisation and item order."),
    suite: Optional[list[str]] = typer.Option(None, help="Suites to include (default: task)."),
    limit: Optional[int] = typer.Option(None, help="At most this many items."),
):
    """Write a blind A/B review page (self-contained HTML) and a CSV of two runs' answers."""
    from ..evaluate.review import export_review

    res = _guard(export_review, run_a, run_b, out, seed, tuple(suite or ["task"]), limit)
    console.print(f"{res['items']} items ({res['identical_skipped']} identical answers skipped) → {out}/index.html")
    console.print(f"Raters open index.html and press 'Download ratings'; keep {out}/key.json to unblind.")


@review_app.command("import")
def review_import(
    ratings: list[Path] = typer.Argument(..., help="Ratings files (downloaded JSON or filled items.csv)."),
    key: Path = typer.Option(..., "--key", "-k", help="key.json written by `review export`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the result as JSON."),
):
    """Unblind ratings and report A's win rate with a 95% Wilson confidence interval."""
    from ..evaluate.review import import_ratings, render_result
    from ..io import atomic_write_json

    res = _guard(import_ratings, ratings, key)
    console.print(render_result(res))
    if out is not None:
        atomic_write_json(out, res)


@review_app.command("judge")
def review_judge(
    run_a: Path = typer.Argument(..., help="Run A (its tuned answers)."),
    run_b: str = typer.Argument(..., help="Run B, or 'base' for run A's base-model answers."),
    endpoint: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL of the judge."),
    model: str = typer.Option("judge", help="Model name sent to the endpoint."),
    local: Optional[Path] = typer.Option(None, help="Local judge: a model folder or a run directory."),
    suite: Optional[list[str]] = typer.Option(None, help="Suites to judge (default: task)."),
    limit: Optional[int] = typer.Option(None, help="At most this many pairs."),
):
    """LLM-as-judge: every pair judged in both orders; A's win rate with a 95% Wilson interval."""
    from ..evaluate.judge import judge_runs, local_judge, openai_judge

    if (endpoint is None) == (local is None):
        _fail(ValueError("give exactly one judge: --endpoint URL (OpenAI-compatible) or --local PATH"))
    judge = openai_judge(endpoint, model) if endpoint else _guard(local_judge, local)
    res = _guard(judge_runs, run_a, run_b, judge, tuple(suite or ["task"]), limit, endpoint or str(local))
    lo, hi = res["ci95"]
    rate = "-" if res["win_rate_a"] is None else f"{100 * res['win_rate_a']:.1f}%"
    console.print(
        f"A wins {res['wins_a']}, B wins {res['wins_b']}, ties {res['ties']} "
        f"({res['inconsistent']} order-inconsistent verdicts counted as ties); "
        f"A win rate {rate} (95% CI {100 * lo:.1f}–{100 * hi:.1f}%)"
    )


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    fmt: Optional[list[str]] = typer.Option(
        None,
        "--format",
        "-f",
        help="adapter|merged|gguf|quantized (repeatable or comma list; default: the recipe's export.formats).",
    ),
    force: bool = typer.Option(False, "--force", help="Export even a run whose evaluation gates failed."),
):
    """Stage 6: write export artefacts and load each back; fails if it behaves differently."""
    from ..deploy.export import export as _export

    out = _guard(_export, _run_dir(run_dir), None, fmt, force)
    console.print_json(json.dumps({k: v for k, v in out.items() if k != "base_model"}))


@app.command()
def chat(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Answer one prompt and exit."),
    max_new_tokens: int = typer.Option(128, help="Longest reply in tokens."),
    rag: Optional[Path] = typer.Option(
        None, "--rag", help="Knowledge index: answer from its top-k passages, cite them."
    ),
    top_k: int = typer.Option(3, "--top-k", help="Passages per question (with --rag)."),
    score_threshold: float = typer.Option(0.0, help="Drop passages with a lower cosine score (with --rag)."),
):
    """Talk to a trained run (interactive, or one shot with --prompt)."""
    from ..deploy.chat import ChatSession, format_citations
    from .rag import _call

    retriever = None
    if rag is not None:
        from ..rag.retrieve import Retriever

        retriever = _call(Retriever.open, rag, top_k, score_threshold)
    session = _guard(ChatSession, _run_dir(run_dir), None, max_new_tokens, retriever)
    if prompt is not None:
        print(session.ask(prompt))
        if retriever is not None:
            print(format_citations(session.citations))
        return
    session.loop()


@app.command()
def serve(
    target: Optional[str] = typer.Argument(None, help="Run directory, or base model (model.base id, folder, .gguf)."),
    adapter: Optional[list[str]] = typer.Option(
        None, "--adapter", "-a", help="name=path of a run directory or PEFT adapter (repeatable)."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port."),
    api_key: Optional[list[str]] = typer.Option(
        None, "--api-key", help="Accepted key (repeatable; default: env TUNEFORGE_API_KEYS)."
    ),
    allow_admin_dir: Optional[Path] = typer.Option(None, help="Enable POST /admin/adapters for folders under DIR."),
    request_log: Optional[Path] = typer.Option(Path("tuneforge-requests.db"), help="SQLite request log."),
    registry: Optional[Path] = typer.Option(
        None,
        "--registry",
        envvar="TUNEFORGE_REGISTRY",
        help="Registry for --adapter NAME=registry:MODEL@ALIAS (default runs/registry.sqlite).",
    ),
    no_request_log: bool = typer.Option(False, "--no-request-log", help="Do not log requests."),
    log_content: bool = typer.Option(False, help="Also log prompts and completions (privacy: off by default)."),
    max_queue: int = typer.Option(64, help="Requests that may wait; more get 429."),
    max_batch_size: int = typer.Option(8, help="Sequences per generation batch."),
    batch_window_ms: float = typer.Option(10.0, help="How long to wait for requests to join a batch."),
    max_tokens: Optional[int] = typer.Option(None, help="Largest max_tokens a request may ask for (512)."),
    max_prompt_tokens: Optional[int] = typer.Option(None, help="Longest prompt in tokens (2048)."),
    max_n: Optional[int] = typer.Option(None, help="Most choices per request (4)."),
    max_body_bytes: Optional[int] = typer.Option(None, help="Largest request body (1 MiB)."),
    max_prompts: Optional[int] = typer.Option(None, help="Most prompts in one /v1/completions request (64)."),
    max_stop_chars: Optional[int] = typer.Option(None, help="Longest stop sequence in characters (256)."),
    dtype: Optional[str] = typer.Option(
        None, help="float32 | bfloat16 | float16 (or fp32, bf16, fp16; default: the recipe's)."
    ),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    rag: Optional[list[str]] = typer.Option(
        None,
        "--rag",
        help="NAME=INDEX: chat requests to model NAME get top-k "
        "passages and citations (INDEX alone: every model; repeatable).",
    ),
    rag_top_k: int = typer.Option(3, help="Default passages per request (requests may set tuneforge_rag.top_k)."),
    rag_score_threshold: float = typer.Option(0.0, help="Default lowest cosine score of a passage."),
    rag_template: Optional[Path] = typer.Option(None, help="RAG prompt template file with {context} and {question}."),
    jobs: Optional[Path] = typer.Option(
        None,
        "--jobs",
        help="Enable the fine-tuning jobs API (/v1/files, /v1/fine_tuning/jobs) with its queue, files and runs in DIR.",
    ),
    jobs_worker: bool = typer.Option(
        True,
        "--jobs-worker/--no-jobs-worker",
        help="With --jobs: also run a worker thread here (else only `tuneforge jobs worker` processes train).",
    ),
    jobs_recipe: Optional[Path] = typer.Option(None, help="With --jobs: recipe every job starts from."),
    jobs_lease: float = typer.Option(
        60.0,
        help="With --jobs: seconds a worker's claim on a job lasts without a heartbeat (a killed server's job resumes after it).",
    ),
    jobs_set: Optional[list[str]] = typer.Option(
        None, "--jobs-set", help="With --jobs: recipe override for every job, e.g. training.threads=2 (repeatable)."
    ),
):
    """Stage 6: OpenAI-compatible server for a base model and many LoRA adapters."""
    from ..deploy.server.app import ServerSettings
    from ..deploy.server.engine import EngineConfig
    from ..deploy.server.launch import RagOptions, api_keys
    from ..deploy.server.launch import serve as _serve
    from ..deploy.server.limits import Limits
    from ..lm.load import dtype_name

    keys, _ = api_keys(api_key, lambda msg: err.print(msg, highlight=False))
    given = {
        "max_tokens": max_tokens,
        "max_prompt_tokens": max_prompt_tokens,
        "max_n": max_n,
        "max_prompts": max_prompts,
        "max_stop_chars": max_stop_chars,
    }
    limits = Limits(**{k: v for k, v in {**given, "max_body_bytes": max_body_bytes}.items() if v is not None})
    mounted: dict = {}
    if jobs is not None:
        from ..jobs.routes import mount
        from ..jobs.spec import JobsConfig

        cfg = JobsConfig(
            root=str(jobs),
            recipe=str(jobs_recipe) if jobs_recipe else None,
            overrides=tuple(jobs_set or ()),
            worker=jobs_worker,
            stale_after_s=jobs_lease,
        )
        mounted = mount(cfg)
    settings = ServerSettings(
        api_keys=keys,
        limits=limits,
        request_log=None if no_request_log else str(request_log),
        log_content=log_content,
        admin_dir=str(allow_admin_dir) if allow_admin_dir else None,
        **mounted,
    )
    rag_opts = None
    if rag:
        from .rag import read_template

        rag_opts = RagOptions(rag, rag_top_k, rag_score_threshold, _guard(read_template, rag_template))
    engine = EngineConfig(max_queue=max_queue, max_batch_size=max_batch_size, batch_window_ms=batch_window_ms)
    _guard(
        _serve,
        target,
        adapter or [],
        host,
        port,
        settings,
        engine,
        rag_opts,
        threads,
        _guard(dtype_name, dtype) if dtype else None,  # checked before anything loads
        console.print,
        str(registry) if registry else None,
    )


@recipe_app.command("validate")
def recipe_validate(
    recipe: Path = typer.Argument(..., help="Recipe YAML."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides."),
):
    """Check a recipe; every problem is listed with its fix."""
    from ..recipe import load_recipe

    r = _guard(load_recipe, recipe, overrides or [])
    console.print(f"[green]ok[/]: {recipe} — run directory {r.run_path()}")


@recipe_app.command("explain")
def recipe_explain():
    """Every recipe field with its type, default and meaning."""
    from ..recipe import explain

    t = Table("key", "type", "default", "meaning")
    for row in explain():
        t.add_row(*row)
    console.print(t)


@data_app.command("inspect")
def data_inspect(
    path: Path = typer.Argument(..., help="Data file (JSONL, JSON, CSV, Parquet) or saved `datasets` folder."),
    format: str = typer.Option("auto", help="Row format (default: detect)."),
    model: str = typer.Option(
        "smollm2-135m-instruct", help="Tokenizer for token statistics (and the model timed by --estimate)."
    ),
    no_tokens: bool = typer.Option(False, "--no-tokens", help="Skip token statistics."),
    max_length: int = typer.Option(512, help="Longest example in tokens (rows over it are counted)."),
    estimate: bool = typer.Option(
        False, "--estimate", help="Also time 2 training steps (recipe-default LoRA) and estimate the training time."
    ),
):
    """Format, row count, token statistics and every problem found in a data file."""
    from ..data.inspect import inspect_file

    timer = None
    if estimate:
        from ..train.estimate import estimate_time as timer
    report = _guard(inspect_file, path, format, None if no_tokens else model, max_length, None, timer)
    print(report["text"])
    if report["problems"]:
        raise typer.Exit(code=1)


@data_app.command("redact")
def data_redact(
    path: Path = typer.Argument(..., help="Data file (JSONL, JSON, CSV, Parquet)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the redacted copy (same format)."),
    types: Optional[list[str]] = typer.Option(None, "--type", help="Entity type to redact (repeatable; default all)."),
    allow: Optional[list[str]] = typer.Option(None, "--allow", help="A string never to redact (repeatable)."),
):
    """Replace emails, phones, cards, IBANs, IPs, SSNs, secrets and names with <TYPE> placeholders."""
    from ..data.pii import TYPES
    from ..data.redact import redact_file

    bad = [t for t in types or [] if t.upper() not in TYPES]
    if bad:
        _fail(ValueError(f"unknown --type {bad[0]!r}; use one of {', '.join(TYPES)}"))
    report = _guard(redact_file, path, output, [t.upper() for t in types] if types else TYPES, allow or [])
    found = ", ".join(f"{t} {n}" for t, n in report["counts"].items()) or "nothing"
    console.print(f"redacted {found} in {report['rows_changed']} row(s) → {output}")


@data_app.command("prepare")
def data_prepare(
    recipe: Path = typer.Argument(..., help="Recipe YAML."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides."),
    overwrite: bool = typer.Option(False, help="Start over if the run directory exists with another recipe."),
):
    """Stage 1 (same as `tuneforge prepare`): validate, clean, split and check the data; creates the run directory."""
    prepare(recipe, overrides, overwrite)


@data_app.command("augment")
def data_augment(
    path: Path = typer.Argument(..., help="Existing data (deduplicated against; may be an empty file)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the augmented JSONL (messages)."),
    teacher: Optional[str] = typer.Option(
        None, help="Local teacher: built-in name, model folder, .gguf or cached hub id."
    ),
    endpoint: Optional[str] = typer.Option(
        None, help="OpenAI-compatible base URL of the teacher, e.g. http://host:8000/v1."
    ),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="OPENAI_API_KEY", help="Key for --endpoint (default: env OPENAI_API_KEY)."
    ),
    model: str = typer.Option("teacher", help="Model name sent to --endpoint."),
    mode: str = typer.Option("paraphrase", help="paraphrase (rewrite questions) | qa (Q&A pairs from --docs)."),
    docs: Optional[list[Path]] = typer.Option(
        None, "--docs", help="Markdown/text document for --mode qa (repeatable)."
    ),
    n: int = typer.Option(1, "--n", help="Paraphrases per row, or Q&A pairs asked per document chunk."),
    limit: Optional[int] = typer.Option(None, help="Use at most this many rows (paraphrase) or chunks (qa)."),
    max_new_tokens: Optional[int] = typer.Option(
        None, help="Teacher reply budget in tokens (default 96 paraphrase, 384 qa)."
    ),
    only_new: bool = typer.Option(False, "--only-new", help="Write only the generated rows."),
):
    """Synthetic rows from a teacher: validated, deduplicated against the data, tagged with provenance."""
    from ..data.augment import augment_file, endpoint_teacher, local_teacher, render_report

    if (teacher is None) == (endpoint is None):
        _fail(ValueError("give exactly one teacher: --teacher MODEL (loaded locally) or --endpoint URL"))
    t = _guard(endpoint_teacher, endpoint, api_key, model) if endpoint else _guard(local_teacher, teacher)
    report = _guard(augment_file, path, output, t, mode, docs or [], n, limit, only_new, max_new_tokens=max_new_tokens)
    console.print(render_report(report), highlight=False, markup=False, soft_wrap=True)
