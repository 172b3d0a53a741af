"""Read rows from JSONL / JSON / CSV / Parquet / a saved `datasets` folder, robustly.

A malformed line never crashes loading: it becomes a Problem with its line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TuneforgeError
from .problems import Problem

MAX_LINE_BYTES = 4 * 1024 * 1024  # one example above 4 MB is a data bug, not a training example


@dataclass
class RawRow:
    line: int
    value: Any


class DataFileError(TuneforgeError, ValueError):
    """The file as a whole cannot be read (missing, unknown extension, unparseable container)."""


def _has_lone_surrogate(obj: Any) -> bool:
    if isinstance(obj, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in obj)
    if isinstance(obj, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_lone_surrogate(v) for v in obj)
    return False


def _read_jsonl(path: Path) -> tuple[list[RawRow], list[Problem]]:
    rows, problems = [], []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if len(raw) > MAX_LINE_BYTES:
                problems.append(Problem(lineno, "line_too_long", "", f"{len(raw):,} bytes > cap {MAX_LINE_BYTES:,}"))
                continue
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue  # blank lines carry no row
            if b"\x00" in raw:
                problems.append(Problem(lineno, "nul_byte", "", "line contains a NUL byte"))
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(Problem(lineno, "invalid_utf8", "", f"byte {exc.start}: {exc.reason}"))
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(Problem(lineno, "invalid_json", "", f"column {exc.colno}: {exc.msg}"))
                continue
            if _has_lone_surrogate(value):
                problems.append(Problem(lineno, "invalid_utf8", "", "text holds a lone UTF-16 surrogate (\\ud8xx)"))
                continue
            rows.append(RawRow(lineno, value))
    return rows, problems


def _read_json(path: Path) -> tuple[list[RawRow], list[Problem]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # a .json file that is really JSON Lines is common; fall back to it
        rows, problems = _read_jsonl(path)
        if rows:
            return rows, problems
        raise DataFileError(f"{path}: not valid JSON ({exc}) — use a JSON array of objects or JSON Lines") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if "messages" in data or "conversations" in data or len(lists) != 1:
            data = [data]
        else:
            data = lists[0]  # {"data": [...]} style wrappers
    if not isinstance(data, list):
        raise DataFileError(f"{path}: top level is {type(data).__name__} — use a JSON array of objects")
    return [RawRow(i, v) for i, v in enumerate(data, start=1)], []


def _records_from_frame(df: Any, first_line: int) -> list[RawRow]:
    import pandas as pd

    rows = []
    for i, rec in enumerate(df.to_dict(orient="records")):
        clean = {}
        for k, v in rec.items():
            if hasattr(v, "tolist"):
                v = v.tolist()
            if v is None or (isinstance(v, float) and pd.isna(v)):
                continue  # empty CSV cell: treat as absent, validation names it if required
            clean[str(k)] = drop_nulls(v)  # Parquet structs carry Arrow's None-filled keys too
        rows.append(RawRow(first_line + i, clean))
    return rows


def _read_csv(path: Path) -> tuple[list[RawRow], list[Problem]]:
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataFileError(f"{path}: cannot parse CSV ({exc}) — save it as UTF-8 CSV with a header row") from None
    rows = _records_from_frame(df, first_line=2)  # line 1 is the header
    for r in rows:  # JSON-encoded list columns (e.g. messages) are common in CSV exports
        for k, v in list(r.value.items()):
            if isinstance(v, str) and v[:1] in "[{":
                try:
                    r.value[k] = json.loads(v)
                except json.JSONDecodeError:
                    pass
    return rows, []


def _read_parquet(path: Path) -> tuple[list[RawRow], list[Problem]]:
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise DataFileError(f"{path}: cannot read Parquet ({exc})") from None
    return _records_from_frame(df, first_line=1), []


def drop_nulls(value: Any) -> Any:
    """Remove the None-valued keys Arrow adds to records and structs.

    Arrow gives every row (and every message struct) the union of all keys, filling the
    ones a row never had with None; validation would then read a message's absent
    `weight` as an invalid weight, or an absent column as present-but-empty.

    >>> drop_nulls({"role": "user", "content": "hi", "weight": None})
    {'role': 'user', 'content': 'hi'}
    """
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def _read_hf_folder(path: Path) -> tuple[list[RawRow], list[Problem]]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, pyarrow errors
        raise DataFileError(
            f"{path}: cannot load the saved `datasets` folder ({exc}) — re-save it with Dataset.save_to_disk"
        ) from None
    if isinstance(ds, DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    return [RawRow(i, drop_nulls(dict(r))) for i, r in enumerate(ds, start=1)], []


READERS = {
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
    ".pq": _read_parquet,
}


def read_rows(path: str | Path) -> tuple[list[RawRow], list[Problem]]:
    """Every row of a data file with its line number, plus problems for unreadable lines."""
    path = Path(path)
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _read_hf_folder(path)
        raise DataFileError(f"{path}: a folder, but not a saved `datasets` dataset (no dataset_info.json)")
    if not path.is_file():
        raise DataFileError(f"{path}: file not found — check data.train / data.validation / data.test")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataFileError(f"{path}: unknown extension '{path.suffix}' — use .jsonl, .json, .csv or .parquet")
    return reader(path)
