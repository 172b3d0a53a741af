"""What a run was trained on: the resolved base model, recorded once in the manifest.

`sources.resolve` turns `model.base` into a `ModelSource` (and hashes the weights) once,
at training time; `record_lineage` writes it into the run's manifest, and every later
stage (evaluate, export, chat, chaining) reads it back with `run_source` instead of
resolving and hashing the base again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import TuneforgeError


class ModelSourceError(TuneforgeError, ValueError):
    pass


@dataclass
class ModelSource:
    id: str  # what the recipe said
    kind: str  # builtin | gguf | folder | hub-cache | run
    path: str  # local HF folder that transformers loads
    sha256: str  # of the original weights (GGUF file or weight files; for a run: its trained result)
    origin: str  # the file/folder the weights came from
    parent_run: dict | None = None  # kind 'run': the parent's path, name, recipe hash, strategy, objective

    def to_dict(self) -> dict:
        return asdict(self)


def record_lineage(run: Any, source: ModelSource) -> None:
    """Write the base model (and, when chained, the parent run) into the run's manifest."""
    fields: dict = {"base_model": source.to_dict()}
    if source.parent_run:
        fields["parent_run"] = source.parent_run
    run.update_manifest(**fields)


def run_source(run: Any) -> ModelSource:
    """The base model the run was trained on, as its manifest recorded it.

    >>> class Untrained:
    ...     path = "runs/x"
    ...     def manifest(self): return {"name": "x"}
    >>> run_source(Untrained())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tuneforge.model.source.ModelSourceError: runs/x: its manifest records no base model ...
    """
    info = run.manifest().get("base_model")
    if not info or not info.get("path"):
        raise ModelSourceError(
            f"{run.path}: its manifest records no base model (base_model.path) — train it first: "
            f"`tuneforge train {run.path}`"
        )
    source = ModelSource(**{k: info.get(k) for k in ("id", "kind", "path", "sha256", "origin", "parent_run")})
    if not Path(source.path).is_dir():
        raise ModelSourceError(
            f"{run.path}: the base model it was trained on is no longer at {source.path} "
            f"(model.base={source.id!r}); put it back, or retrain the run where the base is"
        )
    return source
