"""Fused training ops for the bf16 path: fewer kernels and fewer saved activations.

Each replaces, for the duration of training only, the forward of a module instance
with one autograd function whose backward is written out by hand:

- a LoRA linear (PEFT `lora.Linear`, no variant): base GEMM, A GEMM and the B GEMM
  accumulated into the base output (`addmm`, no separate scale and add); backward is
  five GEMMs and nothing else. PEFT's version spends a scale, an add and their
  backward kernels per layer, 210 layers a step on SmolLM2.
- RMSNorm (Llama family): saves its bf16 input and the fp32 inverse RMS, not the fp32
  copy of the input the reference implementation keeps for backward.
- SwiGLU (`act(gate) * up`): saves gate and up, recomputes the activation in backward
  instead of keeping a third [tokens, intermediate] tensor; with a LoRA down projection
  the product itself is recomputed too (`_SwiGLULora`), not saved for the down GEMMs.

A module is patched only after its fused forward has been checked against the
original on a random input (see `_agrees`), so a model family whose norm or MLP
differs (Gemma's `1 + weight`, a GELU MLP) keeps its own code. Numbers in
bench/results/ (ablations/: each switch off); parity tests in
tests/train/test_fused_attention.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from ..lm.loss import matmul_dtype


# ----------------------------------------------------------------------------- LoRA linear
def _lora_mm(x2, xd2, weight, bias, lora_a, lora_b, scaling):
    """(x W^T + b + s · (x_d A^T) B^T, x_d A^T) for 2-D inputs: the B product is accumulated
    into the base output, no separate scale or add."""
    out = torch.mm(x2, weight.t()) if bias is None else torch.addmm(bias, x2, weight.t())
    xa = torch.mm(xd2, lora_a.t())
    return out.addmm_(xa, lora_b.t(), alpha=scaling), xa


def _lora_weight_grads(g, xd2, xa, lora_b, scaling):
    """(g B, grad A, grad B) for output gradient g [n, out], adapter input xd2 and xa = xd2 A^T."""
    gb = torch.mm(g, lora_b)  # [n, r]
    return gb, torch.mm(gb.t(), xd2).mul_(scaling), torch.mm(g.t(), xa).mul_(scaling)


class _LoraLinear(torch.autograd.Function):
    """y = x W^T (+ b) + s · (x_d A^T) B^T, every operand already in the compute dtype.

    x_d is the dropout-ed input of the adapter path (x itself without dropout); W is
    frozen. Returns grads for x, x_d, A and B.
    """

    @staticmethod
    def forward(ctx, x, x_d, weight, bias, lora_a, lora_b, scaling):
        shape = x.shape
        x2, xd2 = x.reshape(-1, shape[-1]), x_d.reshape(-1, shape[-1])
        out, xa = _lora_mm(x2, xd2, weight, bias, lora_a, lora_b, scaling)
        ctx.save_for_backward(xd2, weight, lora_a, lora_b, xa)
        ctx.same_input = x_d is x
        ctx.scaling = scaling
        ctx.shape = shape
        ctx.has_bias = bias is not None
        return out.reshape(*shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        xd2, weight, lora_a, lora_b, xa = ctx.saved_tensors
        s = ctx.scaling
        g = grad.reshape(-1, weight.shape[0]).to(weight.dtype)
        gb, grad_a, grad_b = _lora_weight_grads(g, xd2, xa, lora_b, s)
        grad_x = grad_xd = None
        if ctx.needs_input_grad[0]:  # not for the first block: its input (the embeddings) is frozen
            grad_x = torch.mm(g, weight)
            if ctx.same_input:
                grad_x = grad_x.addmm_(gb, lora_a, alpha=s)
            grad_x = grad_x.reshape(ctx.shape)
        if not ctx.same_input and ctx.needs_input_grad[1]:
            grad_xd = torch.mm(gb, lora_a).mul_(s).reshape(ctx.shape)
        grad_bias = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return grad_x, grad_xd, None, grad_bias, grad_a, grad_b, None


def _lora_operands(layer: Any, name: str, dt: torch.dtype) -> tuple:
    """(W, bias, A, B, scaling) of adapter `name`, cast to the compute dtype (autograd carries
    the A/B gradients back to the fp32 parameters through the cast)."""
    base = layer.base_layer
    return (
        base.weight.to(dt),
        None if base.bias is None else base.bias.to(dt),
        layer.lora_A[name].weight.to(dt),
        layer.lora_B[name].weight.to(dt),
        float(layer.scaling[name]),
    )


def _lora_adapter(layer: Any) -> str | None:
    """The one active plain adapter of a PEFT LoRA layer over a frozen base, else None."""
    active = getattr(layer, "active_adapters", None)
    if (
        not active
        or len(active) != 1
        or not hasattr(layer, "lora_A")
        or not hasattr(layer, "base_layer")
        or layer.disable_adapters
        or layer.merged
        or active[0] not in layer.lora_A
        or active[0] in getattr(layer, "lora_variant", {})
        or layer.base_layer.weight.requires_grad
    ):
        return None
    return active[0]


def lora_forward(layer: Any, original, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """PEFT lora.Linear forward through `_LoraLinear`; anything unusual goes to `original`."""
    name = None if args or kwargs else _lora_adapter(layer)
    if name is None:
        return original(x, *args, **kwargs)
    dt = matmul_dtype(x)
    dropout = layer.lora_dropout[name]
    x = x.to(dt)
    x_d = x if isinstance(dropout, torch.nn.Identity) or not dropout.training else dropout(x)
    return _LoraLinear.apply(x, x_d, *_lora_operands(layer, name, dt))


# ----------------------------------------------------------------------------- RMSNorm
class _RMSNorm(torch.autograd.Function):
    """weight · (x / rms(x)) in fp32, cast back to x's dtype before the weight (as Llama does)."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(eps))
        out = weight * (xf * rstd).to(x.dtype)
        ctx.save_for_backward(x, weight, rstd)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        xhat = x.float() * rstd
        gy = grad.float() * weight.float()
        grad_x = (gy - xhat * (gy * xhat).mean(-1, keepdim=True)).mul_(rstd).to(x.dtype)
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad.float() * xhat.to(x.dtype).float()).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        return grad_x, grad_w, None


def rmsnorm_forward(mod: Any, original, x: torch.Tensor) -> torch.Tensor:
    return _RMSNorm.apply(x, mod.weight, float(mod.variance_epsilon))


# ----------------------------------------------------------------------------- SwiGLU
class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        grad_up = grad * F.silu(gate)
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
        return grad_gate, grad_up


class _SwiGLULora(torch.autograd.Function):
    """down(silu(gate) · up) for a LoRA down projection, without keeping silu(gate) · up.

    The product is the widest activation of a block ([tokens, intermediate]); it is
    recomputed from gate and up in backward (two element-wise kernels) instead of
    being saved next to them: a third of the MLP's saved activations.
    """

    @staticmethod
    def forward(ctx, gate, up, weight, bias, lora_a, lora_b, scaling):
        h = (F.silu(gate) * up).reshape(-1, gate.shape[-1])
        out, ha = _lora_mm(h, h, weight, bias, lora_a, lora_b, scaling)
        ctx.save_for_backward(gate, up, weight, lora_a, lora_b, ha)
        ctx.scaling, ctx.has_bias = scaling, bias is not None
        return out.reshape(*gate.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        gate, up, weight, lora_a, lora_b, ha = ctx.saved_tensors
        s = ctx.scaling
        g = grad.reshape(-1, weight.shape[0]).to(weight.dtype)
        act = F.silu(gate)
        h = (act * up).reshape(-1, gate.shape[-1])
        gb, grad_a, grad_b = _lora_weight_grads(g, h, ha, lora_b, s)
        grad_h = torch.mm(g, weight).addmm_(gb, lora_a, alpha=s).reshape(gate.shape)
        grad_up = grad_h * act
        grad_gate = torch.ops.aten.silu_backward(grad_h.mul_(up), gate)
        grad_bias = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return grad_gate, grad_up, None, grad_bias, grad_a, grad_b, None


def mlp_forward(mod: Any, original, x: torch.Tensor) -> torch.Tensor:
    gate, up = mod.gate_proj(x), mod.up_proj(x)
    if gate.dtype != up.dtype:
        return mod.down_proj(mod.act_fn(gate) * up)
    down = mod.down_proj
    name = _lora_adapter(down)
    if name is None or not isinstance(down.lora_dropout[name], torch.nn.Identity) and down.lora_dropout[name].training:
        return down(_SwiGLU.apply(gate, up))
    return _SwiGLULora.apply(gate, up, *_lora_operands(down, name, gate.dtype))


# ----------------------------------------------------------------------------- install
def _is_rmsnorm(m: torch.nn.Module) -> bool:
    return (
        type(m).__name__.endswith("RMSNorm")
        and isinstance(getattr(m, "weight", None), torch.Tensor)
        and hasattr(m, "variance_epsilon")
        and m.weight.dim() == 1
    )


def _float_linear(m: Any) -> bool:
    """A floating-point nn.Linear, bare or under a LoRA layer (quantised layers are not
    run on the random check input: bitsandbytes repacks weights on first use)."""
    m = getattr(m, "base_layer", m)
    return type(m) is torch.nn.Linear and m.weight.is_floating_point()


def _is_swiglu_mlp(m: torch.nn.Module) -> bool:
    projs = ("gate_proj", "up_proj", "down_proj")
    return (
        all(hasattr(m, k) for k in (*projs, "act_fn"))
        and type(m.act_fn).__name__ in ("SiLU", "SiLUActivation")
        and all(_float_linear(getattr(m, k)) for k in projs)
    )


def _agrees(mod: torch.nn.Module, fused, dim: int, dtype: torch.dtype) -> bool:
    """Does the fused forward give the module's own output on a random input?"""
    with torch.no_grad():
        x = torch.randn(2, 3, dim, dtype=dtype, device=next(mod.parameters()).device)
        ref = mod.forward(x)
        got = fused(x)
        return ref.shape == got.shape and torch.allclose(ref.float(), got.float(), rtol=2e-2, atol=2e-2)


def fusable(model: torch.nn.Module, lora_layers: list[torch.nn.Module]) -> list[tuple[torch.nn.Module, Any]]:
    """(module, fused forward taking (module, original, *args)) for every module to patch."""
    # only LoRA on a plain floating-point nn.Linear (not bitsandbytes' 4-bit layers, not conv)
    out: list[tuple[torch.nn.Module, Any]] = [
        (m, lora_forward) for m in lora_layers if hasattr(m, "base_layer") and _float_linear(m.base_layer)
    ]
    checked: dict[type, bool] = {}
    for m in model.modules():
        kind = rmsnorm_forward if _is_rmsnorm(m) else mlp_forward if _is_swiglu_mlp(m) else None
        if kind is None:
            continue
        if type(m) not in checked:
            dim = m.weight.shape[0] if kind is rmsnorm_forward else m.gate_proj.in_features
            floats = [p.dtype for p in m.parameters() if p.is_floating_point()]
            dtype = floats[0] if floats else torch.float32
            checked[type(m)] = _agrees(m, lambda x, m=m, k=kind: k(m, m.forward, x), dim, dtype)
        if checked[type(m)]:
            out.append((m, kind))
    return out


@contextlib.contextmanager
def fused_forwards(patches: list[tuple[torch.nn.Module, Any]]) -> Iterator[None]:
    """Route each module's forward through its fused version; restored on exit."""
    for m, fn in patches:
        original = m.forward
        m.forward = lambda *a, _m=m, _fn=fn, _o=original, **k: _fn(_m, _o, *a, **k)
    try:
        yield
    finally:
        for m, _ in patches:
            m.__dict__.pop("forward", None)
