"""Hidden states of the frozen bottom layers, kept for examples the trainer sees again.

With adapters on the last N layers only (`strategy.layers`, or `freeze` training the top
layers), the layers below the lowest trained one never change during a run, and without
dropout they map an example to the same hidden states every time. The first time an example
passes (epoch 1, or the first validation pass) its states at the boundary are kept, per
example; when every example of a packed batch has been seen, the batch starts at the boundary
from those states (`inputs_embeds`, the frozen layers taken out for that forward) instead of
recomputing half the network. The loss and gradients are the same computation on the same
numbers (tests/train/test_frozen_cache.py: per-step losses with and without the cache).

Measured on the demo (SmolLM2-135M, LoRA on the last 15 of 30 layers, 3 epochs, 2-core EPYC with
fp32 AVX2 kernels): training 340.5 -> 298.8 s, 112 MB of states, the same losses; steps of epochs
2-3 ran about 20 % faster (the bottom layers' forward is a third of such a step's FLOPs, the rest
of the step — LoRA ops, LM head, optimiser — stays).

Only where it is exactly the same computation: one process on the CPU (keys are read from
the token ids there), packed batches (examples are told apart by their position restarts), a llama-layout decoder (`embed_tokens`, `layers`,
loop over `layers`), nothing trainable in the embeddings or the bottom layers, no dropout
there, no NEFTune noise on the embeddings. Anything else trains as before; the run's train
summary says which (`frozen_cache`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ..lm.load import base_of
from .attention import segments

# decoder layouts whose forward is `embed_tokens` -> loop over `self.layers` (each layer the same
# kind, one rotary embedding of the positions) -> norm: taking the bottom layers out of `layers`
# and passing their output as `inputs_embeds` runs exactly the rest of the network
_LAYOUTS = {"llama", "mistral", "qwen2", "qwen3", "olmo2", "smollm3"}


def _decoder(model: Any) -> Any:
    base = base_of(model)
    return base.get_decoder() if hasattr(base, "get_decoder") else None


def why_not(model: Any, world_size: int, neftune: float | None) -> tuple[int, str | None]:
    """(index of the lowest trained decoder layer, None) where the cache computes exactly what
    the full forward does, else (0, the reason it is off)."""
    if world_size > 1:
        return 0, "more than one process"
    if neftune:
        return 0, "NEFTune adds noise to the embeddings"
    if next(model.parameters()).device.type != "cpu":
        return 0, "the model is not on the CPU (not measured there)"
    base = base_of(model)
    cfg = getattr(base, "config", None)
    if getattr(cfg, "model_type", None) not in _LAYOUTS:
        return 0, f"model type {getattr(cfg, 'model_type', None)!r} is not a known decoder layout"
    peft = getattr(getattr(model, "module", model), "active_peft_config", None)
    if getattr(peft, "is_prompt_learning", False):
        return 0, "virtual tokens"
    dec = _decoder(model)
    layers = getattr(dec, "layers", None)
    if dec is None or layers is None or not hasattr(dec, "embed_tokens"):
        return 0, "no embed_tokens/layers decoder"
    if getattr(cfg, "attention_dropout", 0.0):
        return 0, "attention dropout"
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return 0, "sliding-window attention"
    lowest = next((i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())), 0)
    if lowest == 0:
        return 0, "the first decoder layer is trained"
    frozen = [dec.embed_tokens, *layers[:lowest]]
    if any(p.requires_grad for m in frozen for p in m.parameters()):
        return 0, "the embeddings are trained"
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for f in frozen for m in f.modules()):
        return 0, "dropout in the frozen layers"
    return lowest, None


class FrozenCache:
    """Per-example boundary states (keyed by the example's token ids) and the two forwards:
    `with cache.forward(inputs) as inputs:` gives the batch as the model should be called with,
    capturing the states of examples not seen yet, or starting at the boundary when all were."""

    def __init__(self, model: Any, lowest: int, max_bytes: int = 2 << 30):
        self.decoder = _decoder(model)
        self.lowest = lowest
        self.max_bytes = max_bytes
        self.states: dict[bytes, torch.Tensor] = {}
        self.bytes = 0
        self.hits = self.misses = 0
        self.full = False

    def summary(self) -> dict:
        return {
            "frozen_layers": self.lowest,
            "batches_from_cache": self.hits,
            "batches_computed": self.misses,
            "examples": len(self.states),
            "megabytes": round(self.bytes / 2**20, 1),
            "full": self.full,
        }

    @staticmethod
    def _examples(ids: torch.Tensor, position_ids: torch.Tensor) -> list[tuple[int, int, int, bytes]]:
        """(start, end, shared prefix length, key) per example of a packed row; an example that
        continues the row's first s tokens (a prefix the collator kept once) is keyed with them."""
        row = ids.reshape(-1)
        out = []
        for start, end, s in segments(position_ids, row.numel()):
            own = row[start:end] if start == 0 or s == 0 else torch.cat([row[:s], row[start:end]])
            out.append((start, end, s if start else 0, own.numpy().tobytes()))
        return out

    @contextlib.contextmanager
    def forward(self, inputs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        ids, pos = inputs.get("input_ids"), inputs.get("position_ids")
        if ids is None or pos is None or ids.shape[0] != 1 or "inputs_embeds" in inputs:
            yield inputs
            return
        examples = self._examples(ids, pos)
        if all(key in self.states for *_, key in examples):
            self.hits += 1
            parts = [self.states[key][s:] if start else self.states[key] for start, _end, s, key in examples]
            hidden = torch.cat(parts)[None]
            rest = {k: v for k, v in inputs.items() if k != "input_ids"}
            with self._top_layers_only():
                yield {**rest, "inputs_embeds": hidden}
            return
        self.misses += 1
        with self._capture(examples):
            yield inputs

    @contextlib.contextmanager
    def _top_layers_only(self) -> Iterator[None]:
        layers = self.decoder.layers
        self.decoder.layers = torch.nn.ModuleList(list(layers)[self.lowest :])
        try:
            yield
        finally:
            self.decoder.layers = layers

    @contextlib.contextmanager
    def _capture(self, examples: list[tuple[int, int, int, bytes]]) -> Iterator[None]:
        if self.full:
            yield
            return

        def keep(_module: Any, _args: Any, output: Any) -> None:
            h = (output[0] if isinstance(output, tuple) else output).detach()[0]
            for start, end, s, key in examples:
                if key in self.states:
                    continue
                state = (h[:end] if not start else torch.cat([h[:s], h[start:end]])).clone()
                size = state.numel() * state.element_size()
                if self.bytes + size > self.max_bytes:
                    self.full = True
                    return
                self.states[key] = state
                self.bytes += size

        handle = self.decoder.layers[self.lowest - 1].register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()
