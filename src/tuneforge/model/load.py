"""Load a resolved model and its tokenizer from a local folder."""

from __future__ import annotations

import os
from typing import Any

from ..data.template import ensure_chat_template

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def offline() -> None:
    """Forbid hub downloads for this process (a run must never fetch weights)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    offline()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return ensure_chat_template(tok)


def load_model(path: str, dtype: str = "float32", trust_remote_code: bool = False) -> Any:
    offline()
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, DTYPES[dtype]), trust_remote_code=trust_remote_code
    )
    return model


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def load_trained(run: Any) -> tuple[Any, Any, Any]:
    """(model, tokenizer, source) of a trained run: base + adapter, or the full model.

    The tokenizer comes from the run's result folder, so chat uses the training template.
    """
    from .sources import resolve

    recipe = run.recipe()
    source = resolve(recipe.model.base, recipe.model.cache_dir)
    result = run.result_dir
    if not result.is_dir():
        raise FileNotFoundError(f"{run.path}: no trained model (adapter/ or model/) — run `tuneforge train {run.path}`")
    tokenizer = load_tokenizer(str(result), recipe.model.trust_remote_code)
    if (result / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_model(source.path, recipe.model.dtype, recipe.model.trust_remote_code)
        model = PeftModel.from_pretrained(base, str(result))
    else:
        model = load_model(str(result), recipe.model.dtype, recipe.model.trust_remote_code)
    model.eval()
    return model, tokenizer, source
