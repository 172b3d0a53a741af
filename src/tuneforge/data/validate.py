"""Load a data file and validate every row: valid rows normalised, invalid rows as Problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TuneforgeError
from .formats import FORMATS, apply_field_map, detect_format, normalise
from .load import read_rows
from .problems import Problem, RowError


@dataclass
class LoadedData:
    path: str
    format: str
    rows: list[dict]  # normalised rows, each with "_line" (its line in the file)
    problems: list[Problem] = field(default_factory=list)

    @property
    def n_seen(self) -> int:
        return len(self.rows) + len({p.line for p in self.problems})


class DataValidationError(TuneforgeError, ValueError):
    def __init__(self, path: str, problems: list[Problem], why: str, limit: int = 20):
        self.problems = problems
        shown = "\n".join(f"  {path}: {p}" for p in problems[:limit])
        more = f"\n  … and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(f"{path}: {why}\n{shown}{more}")


def _user_field(field: str, fields: dict[str, str]) -> str:
    """Name a problem's field by the user's own column when data.fields renamed it."""
    head = field.split(".")[0].split("[")[0]
    return field.replace(head, f"{fields[head]} (as {head})", 1) if head in fields else field


def load_validated(
    path: str | Path, fmt: str = "auto", require_assistant: bool = True, fields: dict[str, str] | None = None
) -> LoadedData:
    """Every row of `path`, normalised to messages; problems name line, field and fix.

    `fields` maps the names a format expects to the file's own columns ({"prompt": "question"}).
    """
    raw, problems = read_rows(path)
    fields = fields or {}
    if fields:
        for r in raw:
            r.value = apply_field_map(r.value, fields)
    if fmt == "auto":
        detected = detect_format([r.value for r in raw])
        if detected is None:
            if not raw:
                return LoadedData(str(path), "unknown", [], problems)
            keys = sorted({k for r in raw[:20] if isinstance(r.value, dict) for k in r.value})
            problems.append(Problem(raw[0].line, "unknown_format", "", f"no known format in keys {keys}"))
            return LoadedData(str(path), "unknown", [], problems)
        fmt = detected
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; use one of {FORMATS}")
    rows = []
    for r in raw:
        try:
            norm = normalise(r.value, fmt, require_assistant=require_assistant)
        except RowError as exc:
            problems.append(Problem(r.line, exc.code, _user_field(exc.field, fields), exc.reason))
            continue
        norm["_line"] = r.line
        rows.append(norm)
    problems.sort(key=lambda p: p.line)
    return LoadedData(str(path), fmt, rows, problems)


def enforce_policy(data: LoadedData, on_error: str, max_drop_fraction: float) -> None:
    """Raise when the file's problems break the policy; otherwise invalid rows stay dropped."""
    if not data.rows:
        why = "no valid rows" if data.problems else "the file holds no rows"
        raise DataValidationError(data.path, data.problems, why)
    if not data.problems:
        return
    if on_error == "fail":
        raise DataValidationError(
            data.path, data.problems, f"{len(data.problems)} invalid row(s) and data.on_error=fail"
        )
    dropped = len({p.line for p in data.problems}) / max(data.n_seen, 1)
    if dropped > max_drop_fraction:
        raise DataValidationError(
            data.path,
            data.problems,
            f"{dropped:.0%} of rows are invalid, above data.max_drop_fraction={max_drop_fraction:.0%}",
        )
