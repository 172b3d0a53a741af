"""tuneforge command line: a thin layer over the stage functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="tuneforge: prepare data, fine-tune, evaluate, export and chat — one run directory per run.")
recipe_app = typer.Typer(no_args_is_help=True, help="Validate and explain recipes.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect data files.")
app.add_typer(recipe_app, name="recipe")
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)


def _known_errors() -> tuple[type[BaseException], ...]:
    from .data.load import DataFileError
    from .data.template import TemplateError
    from .data.validate import DataValidationError
    from .deploy.export import ExportMismatch
    from .model.sources import ModelSourceError
    from .model.strategies import StrategyError
    from .recipe import RecipeError
    from .train.sft import ResumeError

    return (RecipeError, DataValidationError, DataFileError, TemplateError, ModelSourceError, StrategyError,
            ExportMismatch, ResumeError, FileNotFoundError, FileExistsError)


def _fail(exc: BaseException) -> None:
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    raise typer.Exit(code=2)


def _guard(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except _known_errors() as exc:
        _fail(exc)


def _run_dir(path: Path):
    from .run import RunDir

    return _guard(RunDir(path).require)


@app.command()
def run(recipe: Path = typer.Argument(..., help="Recipe YAML."),
        overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides, e.g. training.epochs=1"),
        overwrite: bool = typer.Option(False, help="Start over if the run directory exists with another recipe.")):
    """Run every stage: prepare → train → evaluate → export."""
    from .pipeline import run_all
    from .recipe import load_recipe

    r = _guard(load_recipe, recipe, overrides or [])
    summary = _guard(run_all, r, overwrite, console.print)
    _print_summary(summary)


def _print_summary(s: dict) -> None:
    t = Table(title="tuneforge run summary", show_header=False)
    ev = s.get("eval", {})
    if "base" in ev:
        t.add_row("base fact accuracy", f"{100 * ev['base']['fact_accuracy']:.1f}%")
    if "tuned" in ev:
        t.add_row("tuned fact accuracy", f"{100 * ev['tuned']['fact_accuracy']:.1f}%")
    if s.get("regression"):
        reg = s["regression"]
        t.add_row("general prompts (base → tuned)", f"{100 * reg.get('base', 0):.0f}% → {100 * reg['tuned']:.0f}%")
    tr = s["train"]
    t.add_row("training", f"{tr['steps']} steps, loss {tr['first_loss']} → {tr['train_loss']} (mean), "
                          f"{tr['tokens_per_second']} tok/s, {tr['seconds']} s")
    if "export" in s:
        t.add_row("export", ", ".join(s["export"]["artefacts"].values()) + " (golden prompts identical)")
    t.add_row("run directory", s["run"])
    t.add_row("wall time", f"{s['seconds']} s")
    console.print(t)
    console.print(f"Chat with it:  tuneforge chat {s['run']}   (or --prompt \"…\" for one answer)")
    console.print(f"Report:        {s['run']}/eval/report.md")


@app.command()
def prepare(recipe: Path = typer.Argument(..., help="Recipe YAML."),
            overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides."),
            overwrite: bool = typer.Option(False, help="Start over if the run directory exists with another recipe.")):
    """Stage 1: validate, split and check the data; creates the run directory."""
    from .pipeline import prepare_stage
    from .recipe import load_recipe

    r = _guard(load_recipe, recipe, overrides or [])
    run_, card = _guard(prepare_stage, r, overwrite)
    console.print((run_.data_dir / "data_card.md").read_text())
    console.print(f"run directory: {run_.path}")


@app.command()
def train(run_dir: Path = typer.Argument(..., help="Run directory."),
          resume: bool = typer.Option(False, "--resume", help="Continue from the last complete checkpoint.")):
    """Stages 3-4: fine-tune the run's model on its prepared data."""
    from .train.sft import train as _train

    info = _guard(_train, _run_dir(run_dir), resume)
    console.print_json(json.dumps(info, default=str))


@app.command()
def evaluate(run_dir: Path = typer.Argument(..., help="Run directory."),
             base: bool = typer.Option(True, "--base/--no-base", help="Also evaluate the base model.")):
    """Stage 5: base vs tuned on the held-out test set; writes eval/report.md."""
    from .evaluate.runner import evaluate as _evaluate

    report = _guard(_evaluate, _run_dir(run_dir), None, base)
    console.print((Path(run_dir) / "eval" / "report.md").read_text())
    return report


@app.command()
def export(run_dir: Path = typer.Argument(..., help="Run directory.")):
    """Stage 6: write the adapter and a merged model; fails if golden prompts differ."""
    from .deploy.export import export as _export

    out = _guard(_export, _run_dir(run_dir))
    console.print_json(json.dumps({k: v for k, v in out.items() if k != "base_model"}))


@app.command()
def chat(run_dir: Path = typer.Argument(..., help="Run directory."),
         prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Answer one prompt and exit."),
         max_new_tokens: int = typer.Option(128, help="Longest reply in tokens.")):
    """Talk to a trained run (interactive, or one shot with --prompt)."""
    from .deploy.chat import ChatSession

    session = _guard(ChatSession, _run_dir(run_dir), None, max_new_tokens)
    if prompt is not None:
        print(session.ask(prompt))
        return
    session.loop()


@recipe_app.command("validate")
def recipe_validate(recipe: Path = typer.Argument(..., help="Recipe YAML."),
                    overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides.")):
    """Check a recipe; every problem is listed with its fix."""
    from .recipe import load_recipe

    r = _guard(load_recipe, recipe, overrides or [])
    console.print(f"[green]ok[/]: {recipe} — run directory {r.run_path()}")


@recipe_app.command("explain")
def recipe_explain():
    """Every recipe field with its type, default and meaning."""
    from .recipe import explain

    t = Table("key", "type", "default", "meaning")
    for row in explain():
        t.add_row(*row)
    console.print(t)


@data_app.command("inspect")
def data_inspect(path: Path = typer.Argument(..., help="Data file (JSONL, JSON, CSV, Parquet)."),
                 format: str = typer.Option("auto", help="Row format (default: detect)."),
                 model: str = typer.Option("smollm2-135m-instruct", help="Tokenizer for token statistics."),
                 no_tokens: bool = typer.Option(False, "--no-tokens", help="Skip token statistics.")):
    """Format, row count, token statistics and every problem found in a data file."""
    from .data.inspect import inspect_file

    report = _guard(inspect_file, path, format, None if no_tokens else model)
    print(report["text"])
    if report["problems"]:
        raise typer.Exit(code=1)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
