"""Device and precision choices: bf16 autocast only where the hardware runs bf16 matmuls fast."""

from __future__ import annotations

import os
from functools import lru_cache

# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) from which its bf16 dot-product kernels are allowed
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10_1_512_AMX")


def _cpuinfo(field: str) -> str:
    """The first `field` line's value in /proc/cpuinfo ('' where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next((l.split(":", 1)[1].strip() for l in fh if l.startswith(field)), "")
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    return set(_cpuinfo("flags").split())


def isa_capped_below_bf16(env: dict | None = None) -> bool:
    """True when the environment caps oneDNN/ATen below the ISAs with bf16 dot products.

    A user (or a benchmark emulating an AVX2-only machine) who sets ONEDNN_MAX_CPU_ISA=AVX2 or
    ATEN_CPU_CAPABILITY=avx2 makes every bf16 matmul run emulated, >100x slower than fp32:
    the hardware flags alone would then pick the wrong precision.

    >>> isa_capped_below_bf16({"ONEDNN_MAX_CPU_ISA": "AVX2"}), isa_capped_below_bf16({"ONEDNN_MAX_CPU_ISA": "ALL"})
    (True, False)
    >>> isa_capped_below_bf16({"ATEN_CPU_CAPABILITY": "avx2"}), isa_capped_below_bf16({})
    (True, False)
    """
    env = os.environ if env is None else env
    onednn = env.get("ONEDNN_MAX_CPU_ISA", env.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    if onednn and onednn not in ("ALL", "DEFAULT") and not onednn.startswith(_ONEDNN_BF16_ISAS):
        return True
    aten = env.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    return aten in ("default", "avx2", "zvector", "vsx")


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX) and nothing caps them off."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"}) and not isa_capped_below_bf16()


def cpu_summary() -> dict:
    """What a benchmark prints so numbers from different machines are never mixed."""
    import platform

    import torch

    flags = cpu_flags()
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni")
    return {
        "cpu": _cpuinfo("model name") or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "flags": [f for f in wanted if f in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_env": {
            k: os.environ[k]
            for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
            if k in os.environ
        },
        "fast_bf16": cpu_has_fast_bf16(),
        "torch": torch.__version__,
    }


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
