"""Device and precision choices: bf16 autocast only where the hardware runs bf16 matmuls fast."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((l for l in fh if l.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def device_type() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def use_bf16(precision: str) -> bool:
    """Resolve training.precision ('auto' | 'bf16' | 'fp32') to "autocast to bf16 or not"."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True  # asked for explicitly: honoured even where it is emulated (slow but correct)
    import torch

    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_fast_bf16()
