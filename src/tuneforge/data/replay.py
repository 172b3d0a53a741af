"""Self-distilled replay against forgetting (`data.replay`).

Fine-tuning on a narrow domain moves the weights the model's general behaviour lives in;
it answers "What is the capital of France?" in the domain's voice afterwards ("Français is
the capital of France"). Replay mixes general rows into training whose answers are the
*base model's own* greedy replies (same chat template): the loss on them is small at the
start and rises only where training drifts away from the base, so it pulls back exactly
where forgetting happens, without teaching anything new — unlike replaying a public
instruction set, whose answers differ from the model's and would retrain its style.

The prompts come from a pool of general instructions shipped in the package (or the user's
`replay.pool`); answers are generated once per base model and cached (key: weights hash,
chat template, answer budget), so later runs on the same base pay nothing. An answer that
does not finish within `max_new_tokens` is left out, never cut: training on a cut answer
would teach the model to stop mid-sentence.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..assets import asset
from ..io import atomic_write_jsonl, read_jsonl
from .validate import load_validated

# (conversations, max_new_tokens) -> [(reply, finished)]
Answerer = Callable[[list[list[dict]], int], list[tuple[str, bool]]]


def default_cache_dir() -> Path:
    root = os.environ.get("TUNEFORGE_CACHE") or Path.home() / ".cache" / "tuneforge"
    return Path(root) / "replay"


def pool_prompts(path: str | None) -> list[list[dict]]:
    """The pool's conversations (user turns; a reply in the row is dropped: the base answers)."""
    data = load_validated(path or asset("general_pool.jsonl"), require_assistant=False)
    if not data.rows:
        raise ValueError(f"{path}: no usable prompts for data.replay.pool — check it with `tuneforge data inspect`")
    return [[m for m in r["messages"] if m["role"] != "assistant"] for r in data.rows]


def _key(conv: list[dict]) -> str:
    return hashlib.sha256(json.dumps(conv, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:24]


class ReplayCache:
    """Base-model answers per prompt, one JSONL file per (model, template, budget)."""

    def __init__(self, cache_dir: str | Path | None, model_key: str):
        self.path = Path(cache_dir or default_cache_dir()) / f"{model_key}.jsonl"
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.entries = {e["key"]: e for e in read_jsonl(self.path)}
            except (ValueError, KeyError):  # a damaged cache is regenerated, never trusted
                self.entries = {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_jsonl(self.path, self.entries.values())


def model_key(weights_sha256: str, chat_template: str | None, max_new_tokens: int) -> str:
    """>>> model_key("ab" * 32, "{{x}}", 128)[:6]
    'ababab'"""
    tmpl = hashlib.sha256((chat_template or "").encode()).hexdigest()[:12]
    return f"{weights_sha256[:16]}-{tmpl}-{max_new_tokens}"


def replay_rows(
    want: int,
    prompts: list[list[dict]],
    answer: Answerer,
    cache: ReplayCache,
    max_new_tokens: int,
    seed: int,
    system_prompt: str | None = None,
) -> tuple[list[dict], dict[str, Any]]:
    """`want` rows of pool prompts with the base model's finished answers (fewer when the pool
    runs out; the report says so). Prompts are drawn in a seeded order; only prompts not in
    the cache are generated, a few more than needed to cover unfinished answers."""
    order = list(range(len(prompts)))
    random.Random(f"replay\x00{seed}").shuffle(order)
    rows: list[dict] = []
    generated = unfinished = 0
    pos = 0
    while len(rows) < want and pos < len(order):
        # 1.4x: on the shipped pool 23 % of answers run past 128 tokens (37 of 158); a second
        # round for the last few rows decodes them at a batch size where a step costs nearly a full one
        batch = order[pos : pos + max(8, int((want - len(rows)) * 1.4))]
        pos += len(batch)
        convs = [
            [{"role": "system", "content": system_prompt}, *prompts[i]] if system_prompt else prompts[i] for i in batch
        ]
        missing = [c for c in convs if _key(c) not in cache.entries]
        if missing:
            for conv, (text, done) in zip(missing, answer(missing, max_new_tokens)):
                cache.entries[_key(conv)] = {"key": _key(conv), "reply": text, "finished": bool(done)}
            generated += len(missing)
            cache.save()
        for conv in convs:
            e = cache.entries[_key(conv)]
            if not e["finished"] or not e["reply"].strip():
                unfinished += 1
                continue
            if len(rows) < want:
                rows.append(
                    {
                        "messages": [*conv, {"role": "assistant", "content": e["reply"].strip()}],
                        "provenance": {"generator": "replay"},
                    }
                )
    report = {
        "wanted": want,
        "rows": len(rows),
        "pool": len(prompts),
        "generated_now": generated,
        "from_cache": pos - generated,
        "left_out_unfinished": unfinished,
        "cache": str(cache.path),
    }
    if len(rows) < want:
        report["note"] = f"pool exhausted: {len(rows)} of {want} replay rows (give a larger data.replay.pool)"
    return rows, report
