"""Checkpoints that prove they are whole: a manifest of every file (size, sha256) written last.

A checkpoint folder is written into a staging folder, then this manifest, then everything is
fsynced and the folder renamed into place (`trainer.py`). On resume every candidate is
verified against its manifest, newest first: a truncated weights file, a missing optimizer or
RNG file, or corrupted JSON makes that checkpoint unusable, and resume falls back to the
newest one that verifies — and says so. Nothing resumes silently from a partial state.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from ..io import atomic_write_json, sha256_file

MANIFEST = "tuneforge_checkpoint.json"
PREFIX = "checkpoint"
_STEP = re.compile(rf"^{PREFIX}-(\d+)$")
# without these a resumed run would silently start with fresh state: the trainer state, the
# optimizer (optimizer.pt; FSDP writes optimizer_0/, DeepSpeed global_step*/) and the RNG states
REQUIRED = {
    "trainer_state.json": lambda n: n == "trainer_state.json",
    "the optimizer state (optimizer.pt)": lambda n: n.startswith(("optimizer", "global_step")),
    "the RNG state (rng_state.pth)": lambda n: n.split("/")[-1].startswith("rng_state"),
}


def write_manifest(folder: str | os.PathLike, kind: str = "trainer") -> dict:
    """Hash every file of a fully written checkpoint folder into its manifest (written last).

    `kind`: "trainer" (an HF Trainer checkpoint: optimizer and RNG files are required) or the
    name of an own loop's format ("ppo"), whose files are exactly those the manifest lists."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"version": 1, "kind": kind, "files": files}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def problem(folder: str | os.PathLike, deep: bool = True) -> str | None:
    """What is wrong with a checkpoint folder, or None when it is whole.

    `deep` also re-hashes every file (sizes alone catch truncation, not a flipped byte).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> problem(d)
    'no manifest (tuneforge_checkpoint.json): the checkpoint was never finished'
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return f"no manifest ({MANIFEST}): the checkpoint was never finished"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files, kind = manifest["files"], manifest.get("kind", "trainer")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{path}: unreadable manifest ({exc})"
    for what, matches in REQUIRED.items() if kind == "trainer" else ():
        if not any(matches(n) for n in files):
            return f"{folder}: {what} is missing"
    for name, info in files.items():
        p = folder / name
        if not p.is_file():
            return f"{p}: missing"
        if p.stat().st_size != info["bytes"]:
            return f"{p}: {p.stat().st_size} bytes, the manifest says {info['bytes']} (truncated or rewritten)"
        if deep and sha256_file(p) != info["sha256"]:
            return f"{p}: content differs from the manifest (corrupted)"
    if "trainer_state.json" in files:
        try:
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            return f"{folder / 'trainer_state.json'}: not valid JSON ({exc})"
    return None


def step_of(folder: str | os.PathLike) -> int | None:
    """The optimiser step of a `checkpoint-N` folder name (None for anything else).

    >>> step_of("runs/x/checkpoints/checkpoint-40"), step_of("runs/x/checkpoints/.staging")
    (40, None)
    """
    m = _STEP.match(Path(folder).name)
    return int(m.group(1)) if m else None


def candidates(checkpoints_dir: str | os.PathLike) -> list[Path]:
    """`checkpoint-N` folders, newest first (staging folders are never candidates)."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p), reverse=True)


def newest_verified(checkpoints_dir: str | os.PathLike, warn: Callable[[str], None] | None = None) -> str | None:
    """The newest checkpoint that verifies; every newer one that does not is reported through `warn`."""
    for folder in candidates(checkpoints_dir):
        why = problem(folder)
        if why is None:
            return str(folder)
        if warn is not None:
            warn(f"checkpoint {folder.name} is not usable ({why}); trying the one before it")
    return None


def skipped(checkpoints_dir: str | os.PathLike, chosen: str | None) -> list[str]:
    """Why each checkpoint newer than `chosen` (the one resumed from) was not used."""
    floor = step_of(chosen) if chosen else -1
    return [
        f"checkpoint {folder.name} is not usable ({why}); resumed from {Path(chosen).name if chosen else 'the start'}"
        for folder in candidates(checkpoints_dir)
        if step_of(folder) > floor and (why := problem(folder)) is not None
    ]
