"""`tuneforge data redact IN -o OUT`: the same file with personal data replaced by placeholders.

The output keeps the input's format (JSONL, JSON, CSV, Parquet), row order and every
non-text value; only strings change. A JSONL line that is not valid JSON is redacted as
raw text, so a broken line never smuggles personal data through. Written atomically.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..io import atomic_write_text
from .card import _atomic_write_bytes
from .load import DataFileError
from .pii import TYPES, redact_row, redact_text


def _redact_jsonl(text: str, types: tuple, allow: tuple, counts: Counter) -> tuple[str, int]:
    out, changed = [], 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        end = line[len(body) :]
        try:
            value = json.loads(body) if body.strip() else None
        except json.JSONDecodeError:
            value = None
        if value is None:
            new, c = redact_text(body, types, allow)
        else:
            red, c = redact_row(value, types, allow)
            new = json.dumps(red, ensure_ascii=False) if c else body  # untouched lines stay byte-identical
        counts.update(c)
        changed += bool(c)
        out.append(new + end)
    return "".join(out), changed


def redact_file(src: str | Path, dst: str | Path, types: Iterable[str] = TYPES, allow: Iterable[str] = ()) -> dict:
    """Redact `src` into `dst` (same format); returns counts per type and rows changed."""
    src, dst = Path(src), Path(dst)
    types, allow = tuple(types), tuple(allow)
    if not src.is_file():
        raise DataFileError(f"{src}: file not found")
    if src.resolve() == dst.resolve():
        raise DataFileError(f"{dst}: refusing to overwrite the input — write to another file, check it, then replace")
    suffix = src.suffix.lower()
    counts: Counter = Counter()
    if suffix in (".jsonl", ".ndjson"):
        raw = src.read_bytes().decode("utf-8", errors="replace")
        text, changed = _redact_jsonl(raw.lstrip("\ufeff"), types, allow, counts)
        atomic_write_text(dst, text)
    elif suffix == ".json":
        try:
            value = json.loads(src.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            text, changed = _redact_jsonl(src.read_text(encoding="utf-8", errors="replace"), types, allow, counts)
            atomic_write_text(dst, text)
        else:
            rows = value if isinstance(value, list) else [value]
            red = []
            for r in rows:
                new, c = redact_row(r, types, allow)
                counts.update(c)
                red.append(new)
            changed = sum(1 for a, b in zip(rows, red) if a != b)
            atomic_write_text(
                dst, json.dumps(red if isinstance(value, list) else red[0], ensure_ascii=False, indent=2) + "\n"
            )
    elif suffix in (".csv", ".parquet", ".pq"):
        import pandas as pd

        df = (
            pd.read_csv(src, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            if suffix == ".csv"
            else pd.read_parquet(src)
        )
        before = df.copy()
        for col in df.columns:
            if pd.api.types.is_object_dtype(df[col]) or pd.api.types.is_string_dtype(df[col]):

                def red(v):
                    new, c = redact_row(v.tolist() if hasattr(v, "tolist") else v, types, allow)
                    counts.update(c)
                    return new

                df[col] = df[col].map(red)
        changed = int((df.astype(str) != before.astype(str)).any(axis=1).sum())
        if suffix == ".csv":
            atomic_write_text(dst, df.to_csv(index=False))
        else:
            buf = io.BytesIO()
            df.to_parquet(buf, index=False)
            _atomic_write_bytes(dst, buf.getvalue())
    else:
        raise DataFileError(f"{src}: cannot redact '{suffix}' files — use .jsonl, .json, .csv or .parquet")
    return {"input": str(src), "output": str(dst), "counts": dict(sorted(counts.items())), "rows_changed": changed}
