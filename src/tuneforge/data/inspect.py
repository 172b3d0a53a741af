"""`tuneforge data inspect FILE`: what the data stage would see, without a run directory."""

from __future__ import annotations

from pathlib import Path

from .prepare import token_stats
from .problems import FIXES
from .template import tokenize_messages
from .validate import load_validated


def inspect_file(path: str | Path, fmt: str = "auto", model: str | None = None) -> dict:
    data = load_validated(path, fmt, require_assistant=True)
    lines = [f"file:    {path}", f"format:  {data.format}",
             f"rows:    {data.n_seen} seen, {len(data.rows)} valid, {len({p.line for p in data.problems})} invalid"]
    stats = None
    if model and data.rows:
        from ..model.load import load_tokenizer
        from ..model.sources import resolve

        tok = load_tokenizer(resolve(model).path)
        enc = [tokenize_messages(tok, r["messages"]) for r in data.rows]
        stats = token_stats([len(e["input_ids"]) for e in enc])
        trained = sum(sum(1 for x in e["labels"] if x != -100) for e in enc)
        lines.append(f"tokens:  mean {stats['mean']}, median {stats['median']}, p95 {stats['p95']}, "
                     f"max {stats['max']}, total {stats['total']} ({trained} carry loss) [{model} tokenizer]")
    if data.problems:
        lines.append(f"problems ({len(data.problems)}):")
        lines += [f"  {path}:{p}" for p in data.problems]
        codes = sorted({p.code for p in data.problems})
        lines.append("how to fix:")
        lines += [f"  {c}: {FIXES.get(c, '')}" for c in codes]
    else:
        lines.append("problems: none")
    return {"text": "\n".join(lines), "format": data.format, "rows": len(data.rows),
            "problems": [p.to_dict() for p in data.problems], "tokens": stats}
