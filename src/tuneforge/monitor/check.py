"""`tuneforge monitor check`: every statistic, output check and drift test, against thresholds.

The result is one JSON-able dict; `breaches` lists each threshold that was crossed, and the
CLI exits non-zero when it is not empty (for cron and CI).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Optional

from .config import MonitorConfig
from .stats import load_requests, output_checks, prompt_text, summarise, windows


def _schema(cfg: MonitorConfig, run: Any) -> tuple[Optional[dict], bool]:
    """(JSON schema, whether answers must be JSON): the config's file, else the run's recipe."""
    path = cfg.json_schema
    if path is None and run is not None:
        path = run.recipe().evaluation.json_schema
    if path is None:
        return None, False
    if isinstance(path, dict):
        return path, True
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"json_schema {path}: file not found — fix monitor.yaml json_schema (or the recipe's)")
    return json.loads(p.read_text(encoding="utf-8")), True


def _rate_breaches(scope: str, stats: dict, checks: dict, t: Any) -> list[dict]:
    out = []
    limits = [
        ("error_rate", t.max_error_rate, stats.get("requests", 0)),
        ("latency_p95_ms", t.max_p95_latency_ms, stats.get("requests", 0)),
        ("empty_rate", t.max_empty_rate, checks.get("with_content", 0)),
        ("truncated_rate", t.max_truncated_rate, checks.get("answered", 0)),
        ("refusal_rate", t.max_refusal_rate, checks.get("with_content", 0)),
        ("invalid_json_rate", t.max_invalid_json_rate, checks.get("with_content", 0)),
    ]
    for metric, limit, n in limits:
        value = stats.get(metric, checks.get(metric))
        if limit is None or value is None or n < t.min_requests:
            continue
        if value > limit:
            out.append(
                {
                    "scope": scope,
                    "metric": metric,
                    "value": value,
                    "threshold": limit,
                    "message": f"{scope}: {metric} {value:.4g} > {limit:.4g} (over {n} requests)",
                }
            )
    return out


def run_check(
    log: str | Path,
    cfg: MonitorConfig,
    run_dir: str | Path | None = None,
    adapter: Optional[str] = None,
    embedder: Any = None,
    now: Optional[_dt.datetime] = None,
) -> dict[str, Any]:
    """Statistics, output checks and drift for a request log (optionally against a run)."""
    from ..run import RunDir

    run = RunDir(run_dir).require() if run_dir is not None else None
    since = None
    if cfg.windows.since_hours:
        since = (now or _dt.datetime.now(_dt.timezone.utc)) - _dt.timedelta(hours=cfg.windows.since_hours)
    rows = load_requests(log, since, adapter)
    schema, json_expected = _schema(cfg, run)
    by_adapter: dict[str, list[dict]] = {}
    for r in rows:
        by_adapter.setdefault(r["served"], []).append(r)
    result: dict[str, Any] = {
        "log": str(log),
        "run": str(run.path) if run else None,
        "adapter": adapter,
        "since": since.isoformat(timespec="seconds") if since else None,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "overall": {**summarise(rows), **output_checks(rows, schema, json_expected)},
        "adapters": {
            a: {**summarise(rs), **output_checks(rs, schema, json_expected)} for a, rs in sorted(by_adapter.items())
        },
        "windows": windows(rows, cfg.windows.minutes),
        "thresholds": cfg.model_dump(mode="json"),
    }
    breaches = []
    for a, s in result["adapters"].items():
        breaches += _rate_breaches(a, s, s, cfg.thresholds)
    result["drift"] = None
    if run is not None and cfg.drift.enabled:
        from ..io import read_jsonl
        from .drift import detect_drift, training_prompts
        from .embed import make_embedder

        train_file = run.split_file("train")
        if not train_file.is_file():
            raise FileNotFoundError(f"{train_file}: the run has no prepared training split to compare prompts with")
        reference = training_prompts(read_jsonl(train_file))
        recent = [t for r in rows if r["status"] < 400 and (t := prompt_text(r["prompt"]))]
        drift = detect_drift(reference, recent, cfg.drift, embedder or make_embedder(cfg.drift.embedder))
        result["drift"] = drift
        breaches += [
            {"scope": "drift", "metric": "drift", "value": None, "threshold": None, "message": m}
            for m in drift["reasons"]
        ]
    result["breaches"] = breaches
    result["ok"] = not breaches
    return result
