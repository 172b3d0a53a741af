"""Load a model folder and its tokenizer, offline: what every stage shares.

`model/load.py` builds on these: the training model (strategy applied) and a trained run.
"""

from __future__ import annotations

import os
from typing import Any

from .template import ensure_chat_template

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
