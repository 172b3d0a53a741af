"""`tuneforge data inspect FILE`: what the data stage would see, without a run directory.

Format, rows, every problem with its fix, personal data and duplicates found, and, with a
tokenizer, the estimate before training: tokens (total and assistant-only), rows over
max_length and a suggested epoch count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..lm.template import tokenize_messages
from .card import describe, suggested_epochs
from .dedup import dedup_rows
from .load import DataFileError
from .pii import scan_row
from .prepare import token_stats
from .problems import FIXES
from .validate import load_validated


def estimate(rows: list[dict], tokenizer, max_length: int = 512, train_on: str = "assistant") -> dict:
    """Token counts a training run on `rows` would see, before it starts.

    Over-length rows are counted (prepare drops them) and left out of the totals.
    """
    lengths, trained, over = [], 0, 0
    for r in rows:
        enc = tokenize_messages(tokenizer, r["messages"], train_on)
        if len(enc["input_ids"]) > max_length:
            over += 1
            continue
        lengths.append(len(enc["input_ids"]))
        trained += sum(1 for x in enc["labels"] if x != -100)
    return {
        "tokens": token_stats(lengths),
        "assistant_tokens": trained,
        "over_max_length": over,
        "max_length": max_length,
        "suggested_epochs": suggested_epochs(len(lengths)),
    }


def inspect_file(
    path: str | Path,
    fmt: str = "auto",
    model: str | None = None,
    max_length: int = 512,
    fields: dict[str, str] | None = None,
    time_estimate: Callable[..., dict] | None = None,
) -> dict:
    """The report `tuneforge data inspect` prints; with `time_estimate` (`train.estimate.estimate_time`,
    given by the caller: data needs nothing of training), also the training time measured on `model`
    (recipe-default LoRA, 2 timed steps)."""
    if time_estimate is not None and not model:
        raise DataFileError("a training-time estimate needs a model to time — drop --no-tokens (or pass --model)")
    data = load_validated(path, fmt, require_assistant=True, fields=fields)
    lines = [
        f"file:    {path}",
        f"format:  {data.format}",
        f"rows:    {data.n_seen} seen, {len(data.rows)} valid, {len({p.line for p in data.problems})} invalid",
    ]
    pii: Counter = Counter()
    pii_rows = 0
    for r in data.rows:
        c = scan_row(r)
        pii.update(c)
        pii_rows += bool(c)
    lines.append(
        "pii:     "
        + (
            ", ".join(f"{t} {n}" for t, n in sorted(pii.items())) + f" in {pii_rows} row(s) "
            "(tuneforge data redact FILE -o OUT replaces them)"
            if pii
            else "none found"
        )
    )
    _, dups = dedup_rows(data.rows, "near")
    lines.append(f"dupes:   {dups['exact']} exact, {dups['near']} near-duplicate row(s) (removed by data.dedup=near)")
    est = None
    if model and data.rows:
        from ..lm.load import load_tokenizer
        from ..model.sources import resolve

        tok = load_tokenizer(resolve(model).path)
        est = estimate(data.rows, tok, max_length)
        t = est["tokens"]
        if t["count"]:
            lines.append(
                f"tokens:  mean {t['mean']}, median {t['median']}, p95 {t['p95']}, max {t['max']}, "
                f"total {t['total']} ({est['assistant_tokens']} assistant-only, carry loss) [{model} tokenizer]"
            )
        lines.append(f"length:  {est['over_max_length']} row(s) over max_length={max_length} (dropped by prepare)")
        lines.append(f"epochs:  {est['suggested_epochs']} suggested for {t['count']} example(s)")
        if time_estimate is not None and t["count"]:
            est["time"] = time_estimate(data.rows, model, max_length=max_length, tokenizer=tok)
            lines.append(f"time:    {describe(est['time'])}")
    if data.problems:
        lines.append(f"problems ({len(data.problems)}):")
        lines += [f"  {path}:{p}" for p in data.problems]
        codes = sorted({p.code for p in data.problems})
        lines.append("how to fix:")
        lines += [f"  {c}: {FIXES.get(c, '')}" for c in codes]
    else:
        lines.append("problems: none")
    return {
        "text": "\n".join(lines),
        "format": data.format,
        "rows": len(data.rows),
        "problems": [p.to_dict() for p in data.problems],
        "tokens": est["tokens"] if est else None,
        "estimate": est,
        "pii": dict(pii),
        "duplicates": {"exact": dups["exact"], "near": dups["near"]},
    }
