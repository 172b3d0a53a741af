"""Stage 1 entry point: validated, split, length-checked data written into the run directory."""

from __future__ import annotations

import statistics
from typing import Any

from ..io import atomic_write_json, atomic_write_jsonl, atomic_write_text, sha256_file
from ..recipe import DataConfig
from ..run import RunDir
from .problems import Problem, summarise
from .split import split_rows
from .template import tokenize_messages
from .validate import LoadedData, enforce_policy, load_validated

SPLITS = ("train", "validation", "test")


def maybe_add_system(row: dict, system_prompt: str | None) -> dict:
    """Prepend `system_prompt` unless the row already has a system message."""
    if not system_prompt or any(m["role"] == "system" for m in row["messages"]):
        return row
    return {**row, "messages": [{"role": "system", "content": system_prompt}] + row["messages"]}


def token_stats(lengths: list[int]) -> dict[str, Any]:
    if not lengths:
        return {"count": 0}
    s = sorted(lengths)
    return {"count": len(s), "total": sum(s), "mean": round(statistics.fmean(s), 1), "min": s[0],
            "median": s[len(s) // 2], "p95": s[min(len(s) - 1, int(0.95 * len(s)))], "max": s[-1]}


def length_check(rows: list[dict], tokenizer: Any, cfg: DataConfig, split: str) -> tuple[list[dict], dict]:
    """Drop (and count) rows over max_length; never truncate. Also token statistics."""
    kept, too_long, lengths, trained = [], [], [], []
    for r in rows:
        if split == "test" and not any(m["role"] == "assistant" for m in r["messages"]):
            kept.append(r)  # questions only: nothing to train or measure loss on
            continue
        enc = tokenize_messages(tokenizer, r["messages"], cfg.train_on)
        n = len(enc["input_ids"])
        if n > cfg.max_length:
            too_long.append(Problem(r.get("_line", 0), "too_long", "", f"{n} tokens > data.max_length={cfg.max_length}"))
            continue
        n_trained = sum(1 for x in enc["labels"] if x != -100)
        if split != "test" and n_trained == 0:
            too_long.append(Problem(r.get("_line", 0), "no_assistant_message", "", "no token carries loss"))
            continue
        lengths.append(n)
        trained.append(n_trained)
        kept.append(r)
    stats = {"tokens": token_stats(lengths), "trained_tokens": sum(trained),
             "dropped_too_long": sum(p.code == "too_long" for p in too_long), "problems": too_long}
    return kept, stats


def _load(path: str, cfg: DataConfig, require_assistant: bool) -> LoadedData:
    data = load_validated(path, cfg.format, require_assistant=require_assistant)
    enforce_policy(data, cfg.on_error, cfg.max_drop_fraction)
    data.rows = [maybe_add_system(r, cfg.system_prompt) for r in data.rows]
    return data


def prepare(cfg: DataConfig, run: RunDir, tokenizer: Any) -> dict:
    """Load, validate, split and length-check the data; write splits + data card into `run`."""
    loaded = {"train": _load(cfg.train, cfg, require_assistant=True)}
    for split in ("validation", "test"):
        path = getattr(cfg, split)
        if path:
            loaded[split] = _load(path, cfg, require_assistant=(split != "test"))
    fractions = {s: getattr(cfg, f"{s}_fraction") for s in ("validation", "test") if s not in loaded}
    parts = split_rows(loaded["train"].rows, fractions, cfg.seed)
    for s in ("validation", "test"):
        if s in loaded:
            parts[s] = loaded[s].rows
    card: dict[str, Any] = {"sources": {}, "splits": {}, "seed": cfg.seed, "max_length": cfg.max_length,
                            "train_on": cfg.train_on}
    for name, data in loaded.items():
        card["sources"][name] = {"path": data.path, "format": data.format, "rows_valid": len(data.rows),
                                 "rows_invalid": len({p.line for p in data.problems}),
                                 "problems": summarise(data.problems)}
    hashes = {}
    for split in SPLITS:
        rows, stats = length_check(parts.get(split, []), tokenizer, cfg, split)
        if split == "train" and not rows:
            raise ValueError(f"{cfg.train}: no training rows left after length checks (max_length={cfg.max_length})")
        stats["problems"] = summarise(stats["problems"])
        card["splits"][split] = {"rows": len(rows), **stats}
        path = atomic_write_jsonl(run.split_file(split), rows)
        hashes[split] = sha256_file(path)
    card["sha256"] = hashes
    atomic_write_json(run.data_dir / "data_card.json", card)
    atomic_write_text(run.data_dir / "data_card.md", render_card(card))
    run.update_manifest(data=hashes)
    return card


def render_card(card: dict) -> str:
    lines = ["# Data card", ""]
    for name, src in card["sources"].items():
        lines += [f"## Source: {name}", f"- file: `{src['path']}`", f"- format: {src['format']}",
                  f"- valid rows: {src['rows_valid']}, invalid rows: {src['rows_invalid']}"]
        for code, n in src["problems"]["counts"].items():
            ex = src["problems"]["examples"][code][0]
            lines.append(f"  - {code}: {n} (first: line {ex['line']} {ex['field']} — {ex['reason']})")
        lines.append("")
    lines += ["## Splits", "", "| split | rows | tokens (mean / max) | trained tokens | dropped too long |",
              "|---|---|---|---|---|"]
    for split, s in card["splits"].items():
        t = s["tokens"]
        lines.append(f"| {split} | {s['rows']} | {t.get('mean', '-')} / {t.get('max', '-')} | "
                     f"{s['trained_tokens']} | {s['dropped_too_long']} |")
    lines += ["", f"Split seed {card['seed']}; max_length {card['max_length']}; loss on: {card['train_on']}.", ""]
    return "\n".join(lines)
