"""Training attention: causal SDPA per example of a packed row, the fastest CPU kernel per length.

transformers reads the `position_ids` restarts of a padding-free row as example
boundaries and gives SDPA a [N, N] block-diagonal mask: with an explicit mask the CPU
kernels compute every block, so a row of 8 examples cost 8× the attention of the
examples run one by one, and packing lost to length-grouped padding. Here the mask is
never built: each example's slice runs `is_causal` SDPA on its own, so examples cannot
attend to each other by construction (tests/test_attention.py: packed = unpacked loss).

Which CPU kernel, measured fwd+bwd for one example, 9 query / 3 key-value heads of 64
dims (grouped-query, no key/value copies), 2 threads (ms):

    length            32     62    128    264    384    512   1024
    bf16 math       0.60   0.83   1.95   9.35   15.4   30.8   170.0
    fp32 flash      0.37   0.76   2.14   9.24   11.8   23.3    62.6
    bf16 flash      0.70   1.49   3.65   10.6   11.9   21.6    50.5

so examples up to 448 tokens run flash attention in fp32 (inputs cast for the kernel only),
longer ones bf16 flash. Anything else — a KV cache, padding masks, sliding windows,
non-causal layers — goes to transformers' own SDPA path unchanged.

A prefix every example of a batch shares (a template's default system prompt) may be kept
once at the start of the row (`PackedCollator(share_prefix=True)`): an example whose positions
start at s > 0 attends to the row's first s keys as well as its own. Measured on the demo bench
(8 steps, fp32 AVX2 kernels, SmolLM2's 21-token system prompt on every row): 215 → 252 tok/s,
the same held-out loss.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

NAME = "tuneforge_packed"
_FP32_UP_TO = 448


def _causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None, dropout: float) -> torch.Tensor:
    """Causal attention of one example ([B, H, T, D]; k/v may have fewer, grouped heads)."""
    gqa = q.shape[1] != k.shape[1]
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.shape[-2] <= _FP32_UP_TO:
        # autocast would cast the fp32 inputs straight back to bf16 (SDPA is on its bf16 list);
        # the flash kernel is forced only without dropout, which it may not implement
        with (
            torch.autocast("cpu", enabled=False),
            sdpa_kernel(SDPBackend.FLASH_ATTENTION) if dropout == 0 else contextlib.nullcontext(),
        ):
            out = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), is_causal=True, scale=scale, dropout_p=dropout, enable_gqa=gqa
            )
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, dropout_p=dropout, enable_gqa=gqa)


def segments(position_ids: torch.Tensor | None, length: int) -> list[tuple[int, int, int]]:
    """[start, end) of each example in a packed row, and the length of the row's leading prefix
    it attends to: a new example starts wherever positions do not continue by one; one that
    starts at position s > 0 continues the row's first s tokens, a prefix the collator kept
    once for all (`PackedCollator(share_prefix=True)`)."""
    if position_ids is None:
        return [(0, length, 0)]
    pos = position_ids.reshape(-1)[:length]
    starts = (pos[1:] != pos[:-1] + 1).nonzero().reshape(-1).add(1).tolist()
    firsts = pos[starts].tolist() if starts else []
    bounds = [0, *starts, length]
    return [(bounds[i], bounds[i + 1], int(pos[0]) if i == 0 else firsts[i - 1]) for i in range(len(bounds) - 1)]


def packed_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention-interface function: q/k/v [B, H, T, D] → ([B, T, H, D], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    t = query.shape[-2]
    if (
        attention_mask is not None
        or key.shape[-2] != t
        or not getattr(module, "is_causal", True)
        or kwargs.get("sliding_window")
        or kwargs.get("is_causal") is False
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    dropout = dropout if module.training else 0.0
    pos = kwargs.get("position_ids")
    parts = segments(pos, t) if query.shape[0] == 1 else [(0, t, 0)]
    if parts[0][2] != 0:  # a row must begin at position 0: anything else is not a packed row of ours
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    out = (
        _causal(query, key, value, scaling, dropout)
        if len(parts) == 1
        else _causal_examples(query, key, value, parts, scaling, dropout)
    )
    return out.transpose(1, 2).contiguous(), None


def _causal_examples(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    parts: list[tuple[int, int, int]],
    scale: float | None,
    dropout: float,
) -> torch.Tensor:
    """Causal attention within each [a, b) slice of a packed row ([1, H, N, D] each), one kernel
    call per example (gathering the examples into one padded batch measured ~10 % slower); a
    slice with a shared prefix of s tokens also sees the row's first s keys."""
    return torch.cat(
        [
            _causal(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], scale, dropout)
            if s == 0
            else _with_prefix(q[:, :, a:b], k, v, a, b, s, scale, dropout)
            for a, b, s in parts
        ],
        dim=2,
    )


def _with_prefix(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: int, b: int, s: int, scale: float | None, dropout: float
) -> torch.Tensor:
    """Queries of slice [a, b) over keys [0, s) (all visible) + [a, b) (causal): the mask is
    aligned bottom-right, which SDPA's `is_causal` (top-left) is not, so it is explicit."""
    n = b - a
    keys = torch.cat([k[:, :, :s], k[:, :, a:b]], dim=2)
    values = torch.cat([v[:, :, :s], v[:, :, a:b]], dim=2)
    mask = torch.ones(n, s + n, dtype=torch.bool, device=q.device).tril(diagonal=s)
    gqa = q.shape[1] != k.shape[1]
    dtype = q.dtype
    if q.device.type == "cpu" and dtype == torch.bfloat16:  # fp32 for short rows, as `_causal` does
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(
                q.float(), keys.float(), values.float(), attn_mask=mask, scale=scale, dropout_p=dropout, enable_gqa=gqa
            )
        return out.to(dtype)
    return F.scaled_dot_product_attention(
        q, keys, values, attn_mask=mask, scale=scale, dropout_p=dropout, enable_gqa=gqa
    )


def packed_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: Any = 0,
    kv_offset: Any = 0,
    mask_function: Any = None,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
):
    """No mask for a single unpadded row seen whole (packed or not: `packed_attention` keeps
    the examples apart); transformers' SDPA mask for everything else."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    config = kwargs.get("config")
    whole = (
        attention_mask is None
        and batch_size == 1
        and q_length == kv_length
        and not getattr(config, "sliding_window", None)
    )
    if whole:
        try:
            whole = int(q_offset) == 0 and int(kv_offset) == 0
        except (TypeError, ValueError, RuntimeError):
            whole = False
    if whole:
        return None
    return sdpa_mask(
        batch_size,
        q_length,
        kv_length,
        q_offset,
        kv_offset,
        mask_function or causal_mask_function,
        attention_mask,
        **kwargs,
    )


def register() -> str:
    """Make NAME a valid `attn_implementation` (idempotent); returns it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_attention)
    AttentionMaskInterface.register(NAME, packed_mask)
    return NAME


def supported(model: Any) -> bool:
    """Models whose attention layers are plain causal SDPA (sdpa chosen, no sliding window)."""
    inner = getattr(model, "module", model)
    cfg = getattr(inner, "config", None)
    return (
        cfg is not None
        and getattr(cfg, "_attn_implementation", None) in ("sdpa", NAME)
        and not getattr(cfg, "sliding_window", None)
        and not getattr(cfg, "is_encoder_decoder", False)
    )
