"""Helpers for stage-7 tests: finished-looking run directories without training."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import DEMO, tiny_recipe, write_jsonl


def fake_run(
    tmp_path: Path,
    model_dir: Path,
    name: str,
    seed: int,
    gates: bool | None = True,
    registry_name: str = "support",
    metrics: dict | None = None,
):
    """A run directory that looks trained (LoRA adapter with random B, so it changes outputs)
    and, unless gates is None, evaluated with its gates passed or failed."""
    from deploy.helpers import make_adapter

    from tuneforge.io import atomic_write_json, sha256_file
    from tuneforge.run import RunDir

    data = tmp_path / f"{name}-train.jsonl"
    rows = [json.loads(l) for l in (DEMO / "train.jsonl").read_text().splitlines()][seed * 10 : seed * 10 + 10]
    write_jsonl(data, rows)
    recipe = tiny_recipe(tmp_path, model_dir, {"train": data, "test": data}, name)
    recipe = recipe.model_copy(update={"registry_name": registry_name})
    run = RunDir.create(recipe)
    make_adapter(model_dir, run.adapter_dir, seed)
    run.data_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(run.split_file("train"), rows)
    run.update_manifest(
        data={"train": sha256_file(run.split_file("train"))},
        stages={"train": {"status": "done", "train_loss": 1.0 + seed, "steps": 3}},
    )
    if gates is not None:
        run.stage_finished("evaluate", "done")
        atomic_write_json(
            run.eval_dir / "report.json", {"task": {"tuned": {"fact_accuracy": 0.5 + seed / 10, **(metrics or {})}}}
        )
        run.update_manifest(gates={"passed": gates, "unmet": [] if gates else ["task.fact_accuracy >= 0.99"]})
        if not gates:
            run.update_manifest(status="rejected")
    return run


def write_log(path: Path, rows: list[dict]) -> Path:
    """A request log (schema of the running server) holding `rows` (defaults filled in)."""
    from tuneforge.monitor.requestlog import RequestLog

    log = RequestLog(path, log_content=True)
    for i, r in enumerate(rows):
        text = r.pop("text", "ok")
        prompt = r.pop("user", "hello")
        base = {
            "ts": f"2026-11-22T10:{i // 60 % 60:02d}:{i % 60:02d}.000+00:00",
            "request_id": f"chatcmpl-{i}",
            "route": "/v1/chat/completions",
            "model": "a",
            "adapter": "a",
            "stream": 0,
            "n": 1,
            "status": 200,
            "finish_reason": "stop",
            "prompt_tokens": 5,
            "completion_tokens": 3,
            "latency_ms": 100.0,
            "queue_ms": 1.0,
            "prompt": json.dumps([{"role": "user", "content": prompt}]),
            "completion": json.dumps([text]),
        }
        log.write(**{**base, **r})
    log.flush()
    log.close()
    return path
