"""Precision policy: bf16 autocast only where the CPU runs bf16 matmuls natively and nothing caps them."""

from __future__ import annotations

import pytest

from tuneforge.model import device


@pytest.mark.parametrize(
    "env,capped",
    [
        ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),
        ({"ONEDNN_MAX_CPU_ISA": "avx512_core"}, True),  # AVX-512 without the bf16 dot product
        ({"DNNL_MAX_CPU_ISA": "AVX2_VNNI"}, True),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, False),
        ({"ATEN_CPU_CAPABILITY": "default"}, True),
        ({"ATEN_CPU_CAPABILITY": "avx512"}, False),
        ({}, False),
    ],
)
def test_isa_caps(env, capped):
    assert device.isa_capped_below_bf16(env) is capped


def test_auto_precision_is_fp32_when_the_isa_is_capped(monkeypatch):
    monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "avx512_bf16", "amx_bf16"})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    device.cpu_has_fast_bf16.cache_clear()
    try:
        assert not device.use_bf16("auto")
        assert device.use_bf16("bf16")  # asked for explicitly: honoured
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
        device.cpu_has_fast_bf16.cache_clear()
        assert device.cpu_has_fast_bf16()  # the same flags, uncapped: bf16 units are used
    finally:
        device.cpu_has_fast_bf16.cache_clear()


def test_summary_names_the_cpu_and_its_kernels():
    s = device.cpu_summary()
    assert {"cpu", "flags", "torch_cpu_capability", "isa_env", "fast_bf16", "torch_threads"} <= s.keys()
