"""`tuneforge registry …`: versions of named models, aliases, promotion and rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import console, guard

app = typer.Typer(no_args_is_help=True, help="Model registry: versions, lineage, promote and roll back aliases.")

RegistryOpt = typer.Option(
    None, "--registry", envvar="TUNEFORGE_REGISTRY", help="Registry SQLite file (default: runs/registry.sqlite)."
)


def _reg(path: Optional[Path]):
    from ..registry import Registry, default_path

    return Registry(path or default_path())


_call = guard  # RegistryError is a TuneforgeError: the CLI's one error path


def _headline(row: dict) -> dict:
    keys = ("task.tuned.fact_accuracy", "task.tuned.token_f1", "task.tuned.test_loss", "train.train_loss")
    return {k.split(".")[-1]: row["metrics"][k] for k in keys if k in row["metrics"]}


@app.command("register")
def register(
    run_dir: Path = typer.Argument(..., help="A finished run directory."),
    name: Optional[str] = typer.Option(
        None, "--name", "-n", help="Model name (default: recipe registry_name, else the run name)."
    ),
    registry: Optional[Path] = RegistryOpt,
):
    """Register a finished run as the next version of NAME (again: refresh its metrics)."""
    from ..registry import registry_name
    from ..run import RunDir

    run = _call(RunDir(run_dir).require)
    row = _call(_reg(registry).register, run, name or registry_name(run))
    console.print(f"{row['name']}@{row['version']}  gates: {row['gate_status']}  run: {row['run_dir']}")


@app.command("list")
def list_(
    name: Optional[str] = typer.Argument(None, help="Only this model."),
    registry: Optional[Path] = RegistryOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Every model and version, with aliases, gate status and headline metrics."""
    rows = _call(_reg(registry).list, name)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    t = Table("model", "version", "aliases", "gates", "parent", "metrics", "run")
    for r in rows:
        t.add_row(
            r["name"],
            str(r["version"]),
            ", ".join(r["aliases"]),
            r["gate_status"],
            r["parent"] or "",
            ", ".join(f"{k}={v:.4g}" for k, v in _headline(r).items()),
            r["run_dir"],
        )
    console.print(t)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME@ALIAS."), registry: Optional[Path] = RegistryOpt
):
    """Everything recorded about one version, and the model's alias history."""
    from ..registry import parse_ref

    reg = _reg(registry)
    row = _call(reg.resolve, ref)
    row["alias_history"] = _call(reg.history, parse_ref(ref)[0])
    console.print_json(json.dumps(row))


@app.command("diff")
def diff(
    a: str = typer.Argument(..., help="NAME@V1"),
    b: str = typer.Argument(..., help="NAME@V2 (or another model)."),
    registry: Optional[Path] = RegistryOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """What differs between two versions: lineage, data, recipe and metrics (b minus a)."""
    d = _call(_reg(registry).diff, a, b)
    if as_json:
        console.print_json(json.dumps(d))
        return
    console.print(f"[bold]{d['a']} → {d['b']}[/]")
    for k, (va, vb) in d["fields"].items():
        console.print(f"  {k}: {va} → {vb}", highlight=False)
    for s, (va, vb) in d["data_sha256"].items():
        console.print(f"  data.{s}: {str(va)[:12]} → {str(vb)[:12]}", highlight=False)
    for k, (va, vb) in d["recipe"].items():
        console.print(f"  recipe {k}: {va} → {vb}", highlight=False)

    def fmt(v):
        return "" if v is None else f"{v:.4g}" if isinstance(v, (int, float)) else str(v)

    t = Table("metric", "a", "b", "b - a")
    for k, m in d["metrics"].items():
        t.add_row(k, fmt(m["a"]), fmt(m["b"]), fmt(m["delta"]))
    console.print(t)


@app.command("promote")
def promote(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version number (or another alias, e.g. staging)."),
    alias: str = typer.Option("production", "--alias", help="Alias to move."),
    force: bool = typer.Option(False, "--force", help="Promote even a version whose evaluation gates failed."),
    registry: Optional[Path] = RegistryOpt,
):
    """Point ALIAS (default production) at VERSION; refused for rejected versions unless --force."""
    row = _call(_reg(registry).promote, name, version, alias, force)
    console.print(f"{name}@{alias} → version {row['version']} ({row['run_dir']})")


@app.command("rollback")
def rollback(
    name: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Option("production", "--alias", help="Alias to move back."),
    registry: Optional[Path] = RegistryOpt,
):
    """Point ALIAS back at the version it named before its latest promotion."""
    row = _call(_reg(registry).rollback, name, alias)
    console.print(f"{name}@{alias} → version {row['version']} ({row['run_dir']})")
