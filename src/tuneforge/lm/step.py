"""One decoding step's next-token logits, shared by the batch and the continuous decoders."""

from __future__ import annotations

from typing import Any

from .load import base_of

# decoder-only families whose causal-LM head is exactly `lm_head(last_hidden_state)`: no logit
# scaling or soft-capping after it (gemma2/3, cohere and granite have one and take the plain path)
_PLAIN_HEAD = {"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2"}


def _last_logits(model: Any, cache: Any) -> Any:
    """(input_ids, mask, positions) -> next-token logits of each row's last position.

    Where the head is a plain bias-free Linear, the decoder runs alone and the head is applied
    as `W @ h.T`: with a few rows and a large vocabulary (49k x 576 for SmolLM2) the CPU's
    GEMM runs the transposed product 1.5x faster (fp32, AVX2 kernels, 32 rows: 51 -> 75 GFLOP/s),
    and the head is a third of a decoding step's work at that size."""
    import torch

    base = base_of(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    plain = (
        getattr(base.config, "model_type", None) in _PLAIN_HEAD
        and type(head) is torch.nn.Linear
        and head.bias is None
        and decoder is not None
    )
    if not plain:
        kw = {"use_cache": True, _cache_kwarg(base): cache, "logits_to_keep": 1}
        return lambda ids, mask, pos: model(input_ids=ids, attention_mask=mask, position_ids=pos, **kw).logits[:, -1]
    kw = {"use_cache": True, _cache_kwarg(decoder): cache}

    def step(ids: Any, mask: Any, pos: Any) -> Any:
        h = decoder(input_ids=ids, attention_mask=mask, position_ids=pos, **kw).last_hidden_state[:, -1]
        return torch.mm(head.weight, h.to(head.weight.dtype).T).T

    return step


def _cache_kwarg(module: Any) -> str:
    """transformers renamed `past_key_values` to `cache` during 5.x (the old name warns and goes
    in 5.40): the name this (unwrapped) module's forward takes, so every version the pin allows
    is served."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"
