"""The model registry: every finished run is a numbered version of a named model.

    tuneforge registry list                      models, versions, aliases
    tuneforge registry promote support 3         alias `production` -> version 3 (refused if its gates failed)
    tuneforge registry rollback support          `production` back to the version it pointed to before

It lives beside the runs it points to, like `runs/` itself, because a registry is only
meaningful together with those run directories; a per-user cache would mix unrelated
projects. Path: `--registry PATH`, else env `TUNEFORGE_REGISTRY`, else
`<output_dir>/registry.sqlite` (`runs/registry.sqlite` by default).

Schema (SQLite, version in `PRAGMA user_version`):

    versions       name, version (1, 2, … per name), run_dir (absolute), registered_at, updated_at,
                   base_model, base_sha256, parent ("name@version" or NULL), data_sha256 (JSON
                   {split: sha256}), recipe_sha256, metrics (JSON), gate_status (passed | failed |
                   none | unevaluated), gates_unmet (JSON list), run_status (the manifest's)
    aliases        name, alias, version, updated_at            (the current pointer)
    alias_events   id, ts, name, alias, version, action (promote | rollback), forced

Registering the same run directory again updates its version in place (metrics after a
re-evaluation), so registration is idempotent. Readers (the server polling an alias) only
ever run one indexed SELECT; writers are short transactions, in WAL mode, that wait for each
other (`BUSY_TIMEOUT_S`) instead of failing with "database is locked".
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from .errors import TuneforgeError
from .run import RunDir, now

SCHEMA_VERSION = 1
ENV = "TUNEFORGE_REGISTRY"
DEFAULT_ALIAS = "production"
SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
  name TEXT NOT NULL, version INTEGER NOT NULL, run_dir TEXT NOT NULL,
  registered_at TEXT NOT NULL, updated_at TEXT NOT NULL,
  base_model TEXT, base_sha256 TEXT, parent TEXT, data_sha256 TEXT, recipe_sha256 TEXT,
  metrics TEXT, gate_status TEXT NOT NULL, gates_unmet TEXT, run_status TEXT,
  PRIMARY KEY (name, version), UNIQUE (name, run_dir)
);
CREATE TABLE IF NOT EXISTS aliases (
  name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL,
  PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS alias_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, name TEXT NOT NULL, alias TEXT NOT NULL,
  version INTEGER NOT NULL, action TEXT NOT NULL, forced INTEGER NOT NULL DEFAULT 0
);
"""
JSON_FIELDS = ("data_sha256", "metrics", "gates_unmet")
BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another's transaction


def is_locked(exc: BaseException) -> bool:
    """Whether an SQLite error is another connection holding the database (worth waiting for).

    >>> is_locked(sqlite3.OperationalError("database is locked")), is_locked(sqlite3.OperationalError("no such table"))
    (True, False)
    """
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def enable_wal(conn: sqlite3.Connection, within_s: float = BUSY_TIMEOUT_S) -> None:
    """Put an SQLite file in WAL mode (the file keeps it: readers never block the writer).

    Two connections switching a new file at once can deadlock on its lock, and SQLite then answers
    "database is locked" at once instead of waiting: retried here. The one SQLite helper of the
    registry, the request log and the jobs store, which all open a file that others may be creating.
    """
    deadline = time.monotonic() + within_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not is_locked(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class RegistryError(TuneforgeError, ValueError):
    """A registry request that cannot be met; the message says what to do instead."""


def default_path(output_dir: str | Path = "runs") -> Path:
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else Path(output_dir) / "registry.sqlite"


def parse_ref(ref: str) -> tuple[str, Optional[str]]:
    """`NAME[@VERSION|@ALIAS]` -> (name, version-or-alias or None).

    >>> parse_ref("support@production")
    ('support', 'production')
    >>> parse_ref("support")
    ('support', None)
    """
    name, sep, what = ref.partition("@")
    if not name or (sep and not what):
        raise RegistryError(f"{ref!r}: expected NAME, NAME@VERSION or NAME@ALIAS (e.g. support@3, support@production)")
    return name, (what or None)


def run_record(run: RunDir) -> dict[str, Any]:
    """What the registry stores about a run, read from its manifest and eval report."""
    run.require()
    m = run.manifest()
    train = m.get("stages", {}).get("train", {})
    if train.get("status") != "done" or not (run.adapter_dir.is_dir() or run.model_dir.is_dir()):
        raise RegistryError(
            f"{run.path}: not a finished run (training is {train.get('status', 'not started')}) — "
            f"train it first (`tuneforge train {run.path}`)"
        )
    metrics: dict[str, Any] = {}
    for k in ("train_loss", "first_loss", "steps", "tokens_per_second"):
        if isinstance(train.get(k), (int, float)):
            metrics[f"train.{k}"] = train[k]
    report = run.eval_dir / "report.json"
    if report.is_file():
        rep = json.loads(report.read_text(encoding="utf-8"))
        for model, scores in (rep.get("task") or {}).items():
            for k, v in scores.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    metrics[f"task.{model}.{k}"] = v
        for suite in ("regression", "safety"):
            for k, v in (rep.get(suite) or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    metrics[f"{suite}.{k}"] = v
    gates = m.get("gates")
    evaluated = m.get("stages", {}).get("evaluate", {}).get("status") == "done"
    gate_status = (
        "failed"
        if m.get("status") == "rejected" or (gates and not gates.get("passed"))
        else "passed"
        if gates
        else "none"
        if evaluated
        else "unevaluated"
    )
    parent = m.get("parent")
    base = m.get("base_model") or {}
    return {
        "run_dir": str(run.path.resolve()),
        "base_model": base.get("id") or base.get("path"),
        "base_sha256": base.get("sha256"),
        "parent": f"{parent['name']}@{parent['version']}"
        if isinstance(parent, dict) and "version" in parent
        else parent,
        "data_sha256": m.get("data") or {},
        "recipe_sha256": m.get("recipe_sha256"),
        "metrics": metrics,
        "gate_status": gate_status,
        "gates_unmet": (gates or {}).get("unmet", []),
        "run_status": m.get("status"),
    }


class Registry:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_path()

    # storage ---------------------------------------------------------------------------
    def _connect(self, create: bool = False) -> sqlite3.Connection:
        if not self.path.is_file():
            if not create:
                raise RegistryError(
                    f"no registry at {self.path} — register a run first (`tuneforge registry register "
                    f"RUN --name NAME`), or point --registry / ${ENV} at the right file"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S)
        conn.row_factory = sqlite3.Row
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise RegistryError(
                f"{self.path}: registry schema v{version} is newer than this tuneforge's "
                f"(v{SCHEMA_VERSION}) — upgrade tuneforge"
            )
        if version < SCHEMA_VERSION:  # a new file (maybe being created by another process right now)
            enable_wal(conn)
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return conn

    @staticmethod
    def _row(r: sqlite3.Row) -> dict[str, Any]:
        d = dict(r)
        for k in JSON_FIELDS:
            if k in d and d[k] is not None:
                d[k] = json.loads(d[k])
        return d

    # writing -----------------------------------------------------------------------------
    def register(self, run: RunDir | str | Path, name: str) -> dict[str, Any]:
        """Register (or refresh) `run` as a version of `name`; returns the version row."""
        run = run if isinstance(run, RunDir) else RunDir(run)
        if not name or "@" in name or "/" in name:
            raise RegistryError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (no '@' or '/')")
        rec = run_record(run)
        vals = {k: json.dumps(v) if k in JSON_FIELDS else v for k, v in rec.items()}
        conn = self._connect(create=True)
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")  # the version number is read and written in one transaction
                old = conn.execute(
                    "SELECT version FROM versions WHERE name=? AND run_dir=?", (name, rec["run_dir"])
                ).fetchone()
                if old:
                    version = old["version"]
                    sets = ", ".join(f"{k}=?" for k in vals)
                    conn.execute(
                        f"UPDATE versions SET {sets}, updated_at=? WHERE name=? AND version=?",
                        (*vals.values(), now(), name, version),
                    )
                else:
                    version = (
                        conn.execute("SELECT MAX(version) FROM versions WHERE name=?", (name,)).fetchone()[0] or 0
                    ) + 1
                    cols = ["name", "version", "registered_at", "updated_at", *vals]
                    conn.execute(
                        f"INSERT INTO versions ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                        (name, version, now(), now(), *vals.values()),
                    )
            run.update_manifest(registry={"name": name, "version": version, "path": str(self.path.resolve())})
            return self.get(name, str(version))
        finally:
            conn.close()

    def promote(self, name: str, version: str | int, alias: str = DEFAULT_ALIAS, force: bool = False) -> dict:
        row = self.get(name, str(version))
        if row["gate_status"] == "failed" and not force:
            raise RegistryError(
                f"{name}@{row['version']} failed its evaluation gates "
                f"({'; '.join(row['gates_unmet']) or 'rejected'}) — fix the model, or pass --force "
                f"to promote it anyway"
            )
        self._set_alias(name, alias, row["version"], "promote", force)
        return row

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS) -> dict:
        """Point `alias` back at the version it named before its latest promotion."""
        stack = self.alias_stack(name, alias)
        if len(stack) < 2:
            raise RegistryError(
                f"{name}@{alias} has no earlier version to roll back to "
                f"(history: {', '.join(map(str, stack)) or 'never promoted'})"
            )
        self._set_alias(name, alias, stack[-2], "rollback", False)
        return self.get(name, str(stack[-2]))

    def _set_alias(self, name: str, alias: str, version: int, action: str, forced: bool) -> None:
        if alias.isdigit() or alias == "latest":
            raise RegistryError(
                f"alias {alias!r}: pick a word (e.g. production, staging); numbers and 'latest' already mean a version"
            )
        conn = self._connect()
        try:
            with conn:
                ts = now()
                conn.execute(
                    "INSERT INTO aliases VALUES (?,?,?,?) ON CONFLICT(name, alias) DO UPDATE SET "
                    "version=excluded.version, updated_at=excluded.updated_at",
                    (name, alias, version, ts),
                )
                conn.execute(
                    "INSERT INTO alias_events (ts, name, alias, version, action, forced) VALUES (?,?,?,?,?,?)",
                    (ts, name, alias, version, action, int(forced)),
                )
        finally:
            conn.close()

    # reading -----------------------------------------------------------------------------
    def alias_stack(self, name: str, alias: str) -> list[int]:
        """Versions the alias has pointed to, oldest first, after undoing rolled-back promotions."""
        stack: list[int] = []
        conn = self._connect()
        try:
            for ev in conn.execute(
                "SELECT version, action FROM alias_events WHERE name=? AND alias=? ORDER BY id", (name, alias)
            ):
                if ev["action"] == "rollback":
                    while stack and stack[-1] != ev["version"]:
                        stack.pop()
                else:
                    stack.append(ev["version"])
        finally:
            conn.close()
        return stack

    def get(self, name: str, what: Optional[str] = None) -> dict[str, Any]:
        """One version: `what` is a number, an alias, 'latest' or None (latest)."""
        conn = self._connect()
        try:
            if what is None or what == "latest":
                r = conn.execute(
                    "SELECT * FROM versions WHERE name=? ORDER BY version DESC LIMIT 1", (name,)
                ).fetchone()
            elif what.isdigit():
                r = conn.execute("SELECT * FROM versions WHERE name=? AND version=?", (name, int(what))).fetchone()
            else:
                r = conn.execute(
                    "SELECT v.* FROM versions v JOIN aliases a ON a.name=v.name AND a.version=v.version "
                    "WHERE a.name=? AND a.alias=?",
                    (name, what),
                ).fetchone()
            if r is None:
                known = [
                    f"{x['name']}@{x['version']}"
                    for x in conn.execute("SELECT name, version FROM versions WHERE name=? ORDER BY version", (name,))
                ]
                raise RegistryError(
                    f"{name}@{what or 'latest'} is not in the registry {self.path} "
                    f"(known: {', '.join(known) or 'no versions of ' + repr(name)})"
                )
            out = self._row(r)
            out["aliases"] = [
                a["alias"]
                for a in conn.execute(
                    "SELECT alias FROM aliases WHERE name=? AND version=? ORDER BY alias", (name, out["version"])
                )
            ]
            return out
        finally:
            conn.close()

    def resolve(self, ref: str) -> dict[str, Any]:
        name, what = parse_ref(ref)
        return self.get(name, what)

    def current_run_dir(self, name: str, alias: str) -> Optional[str]:
        """The run directory an alias points at now, or None; the cheap query the server polls."""
        if not self.path.is_file():
            return None
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
        try:
            r = conn.execute(
                "SELECT v.run_dir FROM versions v JOIN aliases a ON a.name=v.name AND a.version=v.version"
                " WHERE a.name=? AND a.alias=?",
                (name, alias),
            ).fetchone()
            return r[0] if r else None
        finally:
            conn.close()

    def list(self, name: Optional[str] = None) -> list[dict[str, Any]]:
        conn = self._connect()
        try:
            q = "SELECT * FROM versions" + (" WHERE name=?" if name else "") + " ORDER BY name, version"
            rows = [self._row(r) for r in conn.execute(q, (name,) if name else ())]
            aliases: dict[tuple, list[str]] = {}
            for a in conn.execute("SELECT * FROM aliases ORDER BY alias"):
                aliases.setdefault((a["name"], a["version"]), []).append(a["alias"])
            for r in rows:
                r["aliases"] = aliases.get((r["name"], r["version"]), [])
            return rows
        finally:
            conn.close()

    def history(self, name: str) -> list[dict[str, Any]]:
        conn = self._connect()
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM alias_events WHERE name=? ORDER BY id", (name,))]
        finally:
            conn.close()

    def diff(self, ref_a: str, ref_b: str) -> dict[str, Any]:
        """Field-by-field differences of two versions (metrics as a-b deltas where both are numbers)."""
        a, b = self.resolve(ref_a), self.resolve(ref_b)
        fields = {}
        for k in ("run_dir", "base_model", "base_sha256", "parent", "recipe_sha256", "gate_status", "run_status"):
            if a.get(k) != b.get(k):
                fields[k] = [a.get(k), b.get(k)]
        data = {
            s: [a["data_sha256"].get(s), b["data_sha256"].get(s)]
            for s in sorted(set(a["data_sha256"]) | set(b["data_sha256"]))
            if a["data_sha256"].get(s) != b["data_sha256"].get(s)
        }
        metrics = {}
        for k in sorted(set(a["metrics"]) | set(b["metrics"])):
            va, vb = a["metrics"].get(k), b["metrics"].get(k)
            if va != vb:
                metrics[k] = {
                    "a": va,
                    "b": vb,
                    "delta": vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None,
                }
        recipe = _recipe_diff(a["run_dir"], b["run_dir"])
        return {
            "a": f"{a['name']}@{a['version']}",
            "b": f"{b['name']}@{b['version']}",
            "fields": fields,
            "data_sha256": data,
            "metrics": metrics,
            "recipe": recipe,
        }


def _recipe_diff(run_a: str, run_b: str) -> dict[str, list]:
    """Differing recipe keys (dotted), when both run directories still exist."""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix[:-1]: d}
        return {k: v for key, val in d.items() for k, v in flat(val, f"{prefix}{key}.").items()}

    try:
        fa, fb = (flat(RunDir(p).recipe().to_dict()) for p in (run_a, run_b))
    except Exception:  # a deleted or moved run: the registry rows still compare
        return {}
    return {
        k: [fa.get(k), fb.get(k)] for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k) and k not in ("name",)
    }


def registry_name(run: RunDir) -> str:
    """The model a run is a version of: `registry_name` in its recipe, else its run name."""
    r = run.recipe()
    return getattr(r, "registry_name", None) or r.name


def record_parent(run: RunDir, path: str | Path | None = None, alias: str = DEFAULT_ALIAS) -> Optional[dict]:
    """Record the model's current `alias` version as this run's parent (a retraining run's lineage).

    Only when the manifest has no parent yet and the alias points at another run.
    """
    m = run.manifest()
    if m.get("parent"):
        return m["parent"]
    reg = Registry(path if path is not None else default_path(run.recipe().output_dir))
    name = registry_name(run)
    try:
        row = reg.get(name, alias)
    except RegistryError:
        return None
    if Path(row["run_dir"]) == run.path.resolve():
        return None
    parent = {"name": name, "version": row["version"], "alias": alias, "run_dir": row["run_dir"]}
    run.update_manifest(parent=parent)
    return parent


def maybe_register(run: RunDir, path: str | Path | None = None, log: Callable[[str], Any] = print) -> Optional[dict]:
    """Register a finished run at the end of `tuneforge run` / `evaluate`; a registry problem is
    reported, never allowed to fail the run that already succeeded."""
    try:
        reg = Registry(path if path is not None else default_path(run.recipe().output_dir))
        row = reg.register(run, registry_name(run))
    except Exception as exc:  # noqa: BLE001 — see docstring
        log(f"registry: {run.path} not registered: {exc}")
        return None
    log(f"registry: {row['name']}@{row['version']} (gates: {row['gate_status']}) in {reg.path}")
    return row
