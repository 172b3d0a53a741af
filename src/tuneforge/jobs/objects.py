"""Store rows as OpenAI API objects: `file`, `fine_tuning.job`, `fine_tuning.job.event`,
`fine_tuning.job.checkpoint`, and cursor pages — the shapes the official client parses."""

from __future__ import annotations

from typing import Optional

ORGANIZATION = "tuneforge"  # OpenAI's jobs name the owning organisation; a self-hosted server has one


def file_object(row: dict) -> dict:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def _method(kind: str, hp: dict) -> dict:
    return {"type": kind, kind: {"hyperparameters": hp}}


def job_object(row: dict) -> dict:
    method = row["method"]
    hp = row["hyperparameters"]
    return {
        "id": row["id"],
        "object": "fine_tuning.job",
        "created_at": row["created_at"],
        "model": row["model"],
        "status": row["status"],
        "error": row["error"],
        "fine_tuned_model": row["fine_tuned_model"],
        "finished_at": row["finished_at"],
        "hyperparameters": {k: hp[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
        "method": _method(method["type"], hp),
        "organization_id": ORGANIZATION,
        "result_files": row["result_files"],
        "seed": row["seed"],
        "trained_tokens": row["trained_tokens"],
        "training_file": row["training_file"],
        "validation_file": row["validation_file"],
        "estimated_finish": None,
        "integrations": [],
        "metadata": row["metadata"],
        "user_provided_suffix": row["suffix"],
    }


def event_object(row: dict) -> dict:
    return {
        "id": row["id"],
        "object": "fine_tuning.job.event",
        "created_at": row["created_at"],
        "level": row["level"],
        "message": row["message"],
        "type": row["type"],
        "data": row["data"] or {},
    }


def checkpoint_object(row: dict) -> dict:
    return {
        "id": row["id"],
        "object": "fine_tuning.job.checkpoint",
        "created_at": row["created_at"],
        "fine_tuned_model_checkpoint": row["model"],
        "fine_tuning_job_id": row["job_id"],
        "step_number": row["step"],
        "metrics": {"step": row["step"], **row["metrics"]},
    }


def page(items: list[dict], has_more: bool, convert) -> dict:
    data = [convert(r) for r in items]
    first: Optional[str] = data[0]["id"] if data else None
    last: Optional[str] = data[-1]["id"] if data else None
    return {"object": "list", "data": data, "has_more": has_more, "first_id": first, "last_id": last}
