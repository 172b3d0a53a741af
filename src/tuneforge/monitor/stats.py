"""Serving statistics from the request log: per adapter, overall and per time window.

Latency percentiles, throughput, error rate and token counts come from every row; the
output checks (empty, truncated, refusal, invalid JSON) from rows with logged content
(`tuneforge serve --log-content`), except `truncated`, which the finish reason tells.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from .requestlog import read_since

CANCELLED = 499  # the client went away: not the server's error


def parse_ts(ts: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def load_requests(path: str | Path, since: Optional[_dt.datetime] = None, adapter: Optional[str] = None) -> list[dict]:
    """Request-log rows, oldest first, each with `served` (adapter name, or the base model's)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no request log here — serve with `tuneforge serve --request-log {path}`")
    rows = read_since(path, since.isoformat(timespec="milliseconds") if since is not None else None)
    for r in rows:
        r["served"] = r["adapter"] or r["model"] or "unknown"
    return [r for r in rows if adapter is None or r["served"] == adapter]


def percentile(values: list[float], q: float) -> Optional[float]:
    """Linear-interpolated percentile (q in 0..100); None for no values.

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    """
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def maybe_json(raw: Optional[str]) -> Any:
    """A logged JSON column's value; None when it is missing (content logging off) or broken."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def prompt_text(raw: Optional[str]) -> Optional[str]:
    """The user's text of a logged prompt: the last user message of a chat, or the completion prompt."""
    p = maybe_json(raw)
    if isinstance(p, list) and p and isinstance(p[0], dict):
        users = [m.get("content") for m in p if m.get("role") == "user" and isinstance(m.get("content"), str)]
        return users[-1] if users else None
    if isinstance(p, list):
        return p[0] if p and isinstance(p[0], str) else None
    return p if isinstance(p, str) else None


def completion_texts(raw: Optional[str]) -> Optional[list[str]]:
    out = maybe_json(raw)
    return [t for t in out if isinstance(t, str)] if isinstance(out, list) else None


def summarise(rows: list[dict], seconds: Optional[float] = None) -> dict[str, Any]:
    """Counts, rates, latency percentiles and throughput of a set of rows."""
    n = len(rows)
    errors = sum(1 for r in rows if r["status"] >= 400 and r["status"] != CANCELLED)
    ok = [r for r in rows if r["status"] < 400]
    lat = [r["latency_ms"] for r in ok]
    if seconds is None and rows:
        span = (parse_ts(rows[-1]["ts"]) - parse_ts(rows[0]["ts"])).total_seconds()
        seconds = span + max(lat or [0]) / 1000
    comp = sum(r["completion_tokens"] for r in rows)
    return {
        "requests": n,
        "errors": errors,
        "cancelled": sum(1 for r in rows if r["status"] == CANCELLED),
        "error_rate": errors / n if n else None,
        "latency_p50_ms": percentile(lat, 50),
        "latency_p95_ms": percentile(lat, 95),
        "queue_p95_ms": percentile([r["queue_ms"] for r in ok if r["queue_ms"] is not None], 95),
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": comp,
        "requests_per_s": n / seconds if seconds else None,
        "completion_tokens_per_s": comp / seconds if seconds else None,
    }


def windows(rows: list[dict], minutes: float) -> list[dict[str, Any]]:
    """`summarise` per adapter per time window (windows aligned to the epoch), oldest first."""
    width = minutes * 60
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        start = math.floor(parse_ts(r["ts"]).timestamp() / width) * width
        groups.setdefault((start, r["served"]), []).append(r)
    out = []
    for (start, served), rs in sorted(groups.items()):
        t0 = _dt.datetime.fromtimestamp(start, _dt.timezone.utc)
        out.append({"start": t0.isoformat(timespec="seconds"), "adapter": served, **summarise(rs, width)})
    return out


def json_validator(schema: Optional[dict]) -> Any:
    """A function text -> bool (valid JSON, and valid under `schema` when it is not empty)."""
    check = None
    if schema:
        import jsonschema

        check = jsonschema.Draft202012Validator(schema).is_valid

    def valid(text: str) -> bool:
        try:
            obj = json.loads(text)
        except ValueError:
            return False
        return check(obj) if check else True

    return valid


def output_checks(rows: Iterable[dict], schema: Optional[dict] = None, json_expected: bool = False) -> dict[str, Any]:
    """Rates of empty, truncated, refusing and (when JSON is expected) invalid-JSON answers."""
    from ..evaluate.safety import is_refusal

    valid = json_validator(schema) if json_expected else None
    answered = [r for r in rows if r["status"] < 400]
    truncated = sum(1 for r in answered if r["finish_reason"] == "length")
    texts = [t for r in answered if (ts := completion_texts(r["completion"])) is not None for t in ts]
    out: dict[str, Any] = {
        "answered": len(answered),
        "with_content": len(texts),
        "truncated": truncated,
        "truncated_rate": truncated / len(answered) if answered else None,
        "empty": sum(1 for t in texts if not t.strip()),
        "refusal": sum(1 for t in texts if is_refusal(t)),
    }
    out["empty_rate"] = out["empty"] / len(texts) if texts else None
    out["refusal_rate"] = out["refusal"] / len(texts) if texts else None
    if valid is not None:
        out["invalid_json"] = sum(1 for t in texts if not valid(t))
        out["invalid_json_rate"] = out["invalid_json"] / len(texts) if texts else None
    return out
