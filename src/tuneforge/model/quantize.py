"""QLoRA's base model: weights loaded in 4-bit NF4 with double quantisation (bitsandbytes).

bitsandbytes' CPU backend runs NF4 too, so QLoRA trains on a laptop (slower than LoRA
there: every matmul dequantises its weight first; the point is memory). Only the
adapter is trained and saved; for evaluation and export the adapter is put on the
full-precision base (`load.load_trained`), which is what a merged export ships.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .device import use_bf16
from .strategies import StrategyError

# bitsandbytes quantises each weight row in blocks of 64 values; its CPU kernels also pack
# 32 output rows together for inference (bitsandbytes/functional.py `_convert_weight_packed_for_cpu`)
NF4_BLOCK = 64
CPU_ROW_BLOCK = 32


def compute_dtype(name: str) -> str:
    """strategy.quant_compute_dtype → the dtype matmuls dequantise to ('auto': bf16 where it is fast)."""
    if name == "auto":
        return "bfloat16" if use_bf16("auto") else "float32"
    return name


def require_bitsandbytes() -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise StrategyError(
            "strategy.kind=qlora needs bitsandbytes for the 4-bit base: `pip install bitsandbytes` "
            "(its wheel runs on CPU too), or use strategy.kind=lora"
        )


def bnb_config(dtype: str) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, dtype),
    )


def unsupported_shapes(model: Any) -> list[str]:
    """4-bit layers whose shape the CPU kernels cannot run (input width not a multiple of 64,
    or output rows not a multiple of 32), as 'name (out×in)'."""
    bad = []
    for name, mod in model.named_modules():
        if type(mod).__name__ == "Linear4bit":
            n, k = mod.out_features, mod.in_features
            if k % NF4_BLOCK or n % CPU_ROW_BLOCK:
                bad.append(f"{name} ({n}×{k})")
    return bad


def load_quantized_base(
    path: str,
    quant_compute_dtype: str,
    requested: bool = False,
    gradient_checkpointing: bool = False,
    *,
    opt_in: bool | None = None,
) -> Any:
    """The base in NF4 (double quantisation), prepared for k-bit training (norms/embeddings fp32).

    `requested` (a recipe's model.trust_remote_code) grants nothing; `opt_in` is the opt-in of
    whoever runs the command (see `lm.load.decide_remote_code`)."""
    require_bitsandbytes()
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from ..lm.load import load_pretrained
    from .device import device_type

    dtype = compute_dtype(quant_compute_dtype)
    model = load_pretrained(
        AutoModelForCausalLM,
        path,
        requested,
        opt_in=opt_in,
        quantization_config=bnb_config(dtype),
        dtype="auto",
        device_map=device_type(),
    )
    if device_type() == "cpu":
        bad = unsupported_shapes(model)
        if bad:
            raise StrategyError(
                f"strategy.kind=qlora: bitsandbytes' CPU 4-bit kernels need layer widths that are multiples of "
                f"{NF4_BLOCK} (inputs) and {CPU_ROW_BLOCK} (outputs); this model has {', '.join(bad[:4])}"
                f"{' …' if len(bad) > 4 else ''} — use strategy.kind=lora, or a GPU"
            )
    # casts the remaining fp16/bf16 weights (norms, embeddings) to fp32 for stable training;
    # gradient checkpointing is only switched on when the recipe asks for it
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
