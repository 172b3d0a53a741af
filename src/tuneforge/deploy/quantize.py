"""Quantised Hugging Face export: bitsandbytes 8-bit / 4-bit NF4, or torchao int8 weight-only.

The artefact is a normal transformers folder whose config.json carries its
`quantization_config`, so a downstream runtime loads it with a plain
`AutoModelForCausalLM.from_pretrained(folder)` — which is exactly how the export check loads it.
"""

from __future__ import annotations

from importlib import util
from pathlib import Path
from typing import Any

from ..errors import TuneforgeError

# recipe name -> (backend, what it is)
QUANT_METHODS = {
    "int8": ("bitsandbytes", "bitsandbytes LLM.int8 8-bit weights"),
    "nf4": ("bitsandbytes", "bitsandbytes 4-bit NF4 weights (double quantisation, fp32 compute)"),
    "torchao-int8": ("torchao", "torchao int8 weight-only"),
}


class QuantizationUnsupported(TuneforgeError, RuntimeError):
    """The quantisation backend is missing or cannot run on this machine."""


def backend_problem(method: str) -> str | None:
    """Why `method` cannot run here, or None when it can."""
    if method not in QUANT_METHODS:
        return f"unknown quantisation {method!r}; choose from {sorted(QUANT_METHODS)}"
    backend = QUANT_METHODS[method][0]
    if util.find_spec(backend) is None:
        return (
            f"quantised export '{method}' needs {backend}, which is not installed here "
            f"(pip install {backend}); the merged and GGUF q8_0 exports need nothing extra"
        )
    return None


def quantization_config(method: str) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if method == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8WeightOnlyConfig())


def quantize_folder(merged_dir: Path, out_dir: Path, method: str, tokenizer: Any) -> dict:
    """Quantise the merged safetensors model in `merged_dir` into `out_dir` (with the tokenizer)."""
    problem = backend_problem(method)
    if problem:
        raise QuantizationUnsupported(problem)
    from transformers import AutoModelForCausalLM

    from ..lm.load import offline

    offline()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(merged_dir), quantization_config=quantization_config(method), device_map="cpu"
        )
        # transformers 5 writes safetensors only (torchao's tensor subclasses are flattened into
        # safetensors by its quantizer's get_state_dict_and_metadata); checked below all the same
        model.save_pretrained(str(out_dir))
    except (RuntimeError, ValueError, ImportError, NotImplementedError) as exc:
        raise QuantizationUnsupported(
            f"quantised export '{method}' ({QUANT_METHODS[method][1]}) failed on this "
            f"machine: {type(exc).__name__}: {exc}"
        ) from exc
    refuse_pickle(out_dir, method)
    tokenizer.save_pretrained(str(out_dir))
    size = sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file())
    return {"method": method, "what": QUANT_METHODS[method][1], "bytes": size}


def refuse_pickle(out_dir: Path, method: str) -> None:
    """A quantised export must load where tuneforge loads models: safetensors only (pickle weights
    are refused by every loader here, `lm/load.py`), so an export that wrote one fails now."""
    from ..lm.load import PICKLE_SUFFIXES

    pickled = sorted(f.name for f in Path(out_dir).iterdir() if f.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise QuantizationUnsupported(
            f"quantised export '{method}' wrote pickle weights ({', '.join(pickled)}) in {out_dir}, which no "
            f"tuneforge loader accepts — use another export.quantization method or a transformers that saves safetensors"
        )


def load_quantized(folder: Path) -> Any:
    """Load the artefact as a downstream runtime would: config.json says how it is quantised."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), device_map="cpu")
