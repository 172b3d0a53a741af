"""RunDir: the run directory is the one contract between stages.

runs/<name>/
  recipe.yaml  manifest.json  data/  checkpoints/  adapter/ or model/
  logs/metrics.jsonl  eval/  export/
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from .io import atomic_write_json, atomic_write_text
from .recipe import Recipe, load_recipe

TRACKED_PACKAGES = ("tuneforge", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "gguf")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


class RunDir:
    """A run directory and its manifest (lineage + per-stage status)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # layout ---------------------------------------------------------------
    recipe_file = property(lambda self: self.path / "recipe.yaml")
    manifest_file = property(lambda self: self.path / "manifest.json")
    data_dir = property(lambda self: self.path / "data")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    adapter_dir = property(lambda self: self.path / "adapter")
    model_dir = property(lambda self: self.path / "model")
    logs_dir = property(lambda self: self.path / "logs")
    metrics_file = property(lambda self: self.path / "logs" / "metrics.jsonl")
    eval_dir = property(lambda self: self.path / "eval")
    export_dir = property(lambda self: self.path / "export")

    def split_file(self, split: str) -> Path:
        return self.data_dir / f"{split}.jsonl"

    @property
    def result_dir(self) -> Path:
        """Where the trained result lives: the adapter folder, or the full model folder."""
        return self.adapter_dir if self.adapter_dir.exists() else self.model_dir

    # lifecycle -------------------------------------------------------------
    @classmethod
    def create(cls, recipe: Recipe, overwrite: bool = False) -> RunDir:
        run = cls(recipe.run_path())
        if run.manifest_file.exists() and not overwrite:
            old = run.recipe()
            if old.sha256() != recipe.sha256():
                raise FileExistsError(
                    f"{run.path} already holds a run with a different recipe — choose another name "
                    f"(name=...), or pass --overwrite to start it again"
                )
            return run
        if overwrite and run.path.exists():
            import shutil

            shutil.rmtree(run.path)
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.recipe_file, recipe.to_yaml())
        atomic_write_json(
            run.manifest_file,
            {
                "name": recipe.name,
                "status": "created",
                "created_at": now(),
                "updated_at": now(),
                "recipe_sha256": recipe.sha256(),
                "packages": package_versions(),
                "git_commit": git_commit(),
                "base_model": {"id": recipe.model.base},
                "data": {},
                "parent": None,
                "stages": {},
            },
        )
        return run

    def exists(self) -> bool:
        return self.manifest_file.is_file() and self.recipe_file.is_file()

    def require(self) -> RunDir:
        if not self.exists():
            raise FileNotFoundError(
                f"{self.path} is not a tuneforge run directory (no manifest.json/recipe.yaml) — "
                f"create one with `tuneforge run RECIPE` or `tuneforge prepare RECIPE`"
            )
        return self

    def recipe(self) -> Recipe:
        return load_recipe(self.recipe_file, resolved=True)

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_file.read_text(encoding="utf-8"))

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        m = self.manifest()
        for k, v in fields.items():
            if isinstance(v, dict) and isinstance(m.get(k), dict):
                m[k].update(v)
            else:
                m[k] = v
        m["updated_at"] = now()
        from .dist import is_main_process

        if is_main_process():  # under `accelerate launch` only rank 0 writes the run directory
            atomic_write_json(self.manifest_file, m)
        return m

    def stage_started(self, stage: str) -> None:
        self.update_manifest(stages={stage: {"status": "running", "started_at": now()}})

    def stage_finished(self, stage: str, status: str = "done", **info: Any) -> None:
        m = self.manifest()
        entry = dict(m.get("stages", {}).get(stage, {}))
        entry.update(status=status, finished_at=now(), **info)
        overall = {"prepare": "prepared", "train": "trained", "evaluate": "evaluated", "export": "exported"}
        self.update_manifest(
            stages={stage: entry}, status=overall.get(stage, stage) if status == "done" else f"{stage}_{status}"
        )
