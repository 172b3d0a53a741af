"""Load a model folder and its tokenizer, offline: what every stage shares.

`model/load.py` builds on these: the training model (strategy applied) and a trained run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import TuneforgeError
from .template import ensure_chat_template

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
# what people type for them (`serve --dtype fp16`)
DTYPE_ALIASES = {
    "fp32": "float32",
    "f32": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
}


class DtypeError(TuneforgeError, ValueError):
    pass


def dtype_name(name: str) -> str:
    """The torch dtype name for a dtype as a user writes it.

    >>> dtype_name("fp16"), dtype_name("bfloat16")
    ('float16', 'bfloat16')
    >>> dtype_name("int4")
    Traceback (most recent call last):
    ...
    tuneforge.lm.load.DtypeError: dtype 'int4': use float32, bfloat16 or float16 (or fp32, bf16, fp16)
    """
    key = str(name).strip().lower()
    if key in DTYPES:
        return key
    if key in DTYPE_ALIASES:
        return DTYPE_ALIASES[key]
    raise DtypeError(f"dtype {name!r}: use float32, bfloat16 or float16 (or fp32, bf16, fp16)")


def offline() -> None:
    """Forbid hub downloads for this process (a run must never fetch weights)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# -- what may run, what may be unpickled ------------------------------------------------------
#
# A model folder is data, and may come from anyone (a hub snapshot, a job's upload, a run's
# recipe.yaml). Two things in it can execute code when loaded: custom modelling code that
# `auto_map` points transformers at, and pickle weights (.bin/.pt: unpickling calls whatever the
# file names). Custom code runs only when the person running the command opts in; pickle never.

REMOTE_CODE_ENV = "TUNEFORGE_TRUST_REMOTE_CODE"
REMOTE_CODE_FLAG = "--trust-remote-code"
CODE_CONFIGS = ("config.json", "tokenizer_config.json")  # where transformers reads `auto_map`
# torch.load(weights_only=True) is not a sandbox on every torch this package allows (torch>=2.4;
# CVE-2025-32434 bypassed it before 2.6), so pickle weights are refused, not loaded "safely"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MODEL_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
ADAPTER_SAFE_WEIGHTS = ("adapter_model.safetensors",)


class RemoteCodeRefused(TuneforgeError, PermissionError):
    """A model folder asks for custom code and nobody running the command allowed it."""


class PickleWeightsRefused(TuneforgeError, ValueError):
    """A model folder holds its weights only as pickle files."""


def remote_code_opt_in(opt_in: bool | None = None) -> bool:
    """The explicit opt-in of whoever runs the command: `opt_in` when given (the CLI's
    --trust-remote-code), else TUNEFORGE_TRUST_REMOTE_CODE=1 in the environment. Never a recipe.

    >>> remote_code_opt_in(False), remote_code_opt_in(True)
    (False, True)
    """
    if opt_in is not None:
        return bool(opt_in)
    return os.environ.get(REMOTE_CODE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def custom_code_files(folder: str | os.PathLike) -> list[Path]:
    """The config files in `folder` whose `auto_map` points transformers at custom code.

    >>> custom_code_files("/nonexistent")
    []
    """
    out = []
    for name in CODE_CONFIGS:
        f = Path(folder) / name
        try:
            cfg = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent or unreadable: transformers cannot read it either
            continue
        if isinstance(cfg, dict) and cfg.get("auto_map"):
            out.append(f)
    return out


def decide_remote_code(folder: str | os.PathLike, opt_in: bool | None = None, requested: bool = False) -> bool:
    """The `trust_remote_code` to load `folder` with: True only when the folder has custom code
    (`auto_map`) and whoever runs the command opted in (`remote_code_opt_in`). Custom code
    without the opt-in is refused. `requested` (a recipe's model.trust_remote_code) is named in
    the refusal and grants nothing: a recipe travels with a run and may come from anyone.

    >>> decide_remote_code("/nonexistent", opt_in=True)  # nothing custom: nothing to trust
    False
    """
    files = custom_code_files(folder)
    if not files:
        return False
    if remote_code_opt_in(opt_in):
        return True
    asked = " (the recipe's model.trust_remote_code=true is not an opt-in)" if requested else ""
    raise RemoteCodeRefused(
        f"{files[0]}: auto_map points at custom code in {Path(folder)} that would run on load, and "
        f"nobody allowed that{asked} — read that code, then pass {REMOTE_CODE_FLAG} (or set "
        f"{REMOTE_CODE_ENV}=1) to run it"
    )


def check_weights(
    folder: str | os.PathLike, safe: tuple[str, ...] = MODEL_SAFE_WEIGHTS, required: bool = False
) -> None:
    """Refuse a folder whose weights are pickle only (or, `required`, that has none of `safe`):
    loading runs with safetensors only, so a stray .bin next to model.safetensors is never opened.

    >>> check_weights("/nonexistent")  # not a folder: the loader names what is missing
    """
    p = Path(folder)
    if not p.is_dir() or any((p / name).is_file() for name in safe):
        return
    pickled = sorted(f.name for f in p.iterdir() if f.suffix.lower() in PICKLE_SUFFIXES)
    if pickled or required:
        found = f"weights only as pickle ({', '.join(pickled[:4])}), and unpickling a file runs whatever code it names"
        raise PickleWeightsRefused(
            f"{p}: {found if pickled else 'no weights'} — tuneforge loads {' or '.join(safe)} only; convert "
            f"it on a machine you trust (`save_pretrained(folder, safe_serialization=True)`) or use a "
            f"safetensors release"
        )


def load_pretrained(
    auto_cls: Any, path: str, requested: bool = False, *, opt_in: bool | None = None, **kwargs: Any
) -> Any:
    """`auto_cls.from_pretrained(path, **kwargs)` with custom code decided by `decide_remote_code`
    and safetensors weights only: every model load of the package goes through here."""
    offline()
    trust = decide_remote_code(path, opt_in, requested)
    check_weights(path)
    return auto_cls.from_pretrained(path, trust_remote_code=trust, use_safetensors=True, **kwargs)


def load_tokenizer(path: str, requested: bool = False, *, opt_in: bool | None = None) -> Any:
    """The folder's tokenizer with a chat template. `requested`: see `decide_remote_code`."""
    offline()
    from transformers import AutoTokenizer

    trust = decide_remote_code(path, opt_in, requested)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
    return ensure_chat_template(tok)


def load_model(path: str, dtype: str = "float32", requested: bool = False, *, opt_in: bool | None = None) -> Any:
    """A causal LM from a local folder. `requested`: see `decide_remote_code`."""
    import torch
    from transformers import AutoModelForCausalLM

    return load_pretrained(
        AutoModelForCausalLM, path, requested, opt_in=opt_in, dtype=getattr(torch, dtype_name(dtype))
    )


def base_of(model: Any) -> Any:
    """The transformers model inside a distributed (`.module`) and/or PEFT wrapper: the one
    whose config, attention implementation and forward signature are the model's own (PEFT's
    forward takes **kwargs; its LoRA layers sit inside the base, so calling the base runs them)."""
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def load_adapter(base: Any, folder: str, **kwargs: Any) -> Any:
    """`PeftModel.from_pretrained(base, folder)` from adapter_model.safetensors only (PEFT itself
    falls back to unpickling adapter_model.bin)."""
    offline()
    from peft import PeftModel

    check_weights(folder, ADAPTER_SAFE_WEIGHTS, required=True)
    return PeftModel.from_pretrained(base, str(folder), **kwargs)


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
