"""The jobs API's operations, apart from HTTP: store uploads, create and validate jobs.

`JobService` is what the routes call (and what tests and the CLI can call directly);
errors are `JobRequestError` (bad request, with the OpenAI `param`) or `LookupError`
(no such file or job).
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import BinaryIO, Optional

from .spec import (
    SUFFIX_RE,
    CreateJobRequest,
    JobRequestError,
    JobsConfig,
    check_file,
    job_recipe,
    model_name,
    requested_method,
    resolve_hyperparameters,
)
from .store import DEFAULT_LEASE_S, Store, new_id, worker_id

UPLOAD_EXTENSIONS = (".jsonl",)  # as OpenAI: fine-tuning data is JSON Lines
# characters that look like a path separator (NFKC already turns the full-width ones into ASCII)
SLASH_LOOKALIKES = dict.fromkeys(map(ord, "\u2215\u2044\u29f8\u2216\u29f9"), "/")


def upload_name(filename: str) -> str:
    r"""The name an upload is listed under: its last path component, after Unicode compatibility
    normalisation (full-width dots and slashes, U+2215 and other slash look-alikes count as what they
    look like). The file itself is always stored as `<files>/<file id>.jsonl`; the name never
    becomes a path. Control and invisible format characters (NUL, bidi overrides) are refused.

    >>> upload_name("../../etc/train.jsonl"), upload_name("C:\\data\\train.jsonl")
    ('train.jsonl', 'train.jsonl')
    >>> upload_name("\uff0e\uff0e\u2215\uff0e\uff0e\u2215evil.jsonl")
    'evil.jsonl'
    >>> upload_name("a\x00.jsonl")
    Traceback (most recent call last):
    ...
    tuneforge.jobs.spec.JobRequestError: file name 'a\x00.jsonl' holds a control or format character (U+0000)
    """
    bad = next((c for c in filename if unicodedata.category(c).startswith("C")), None)
    if bad is not None:
        raise JobRequestError(
            f"file name {filename!r} holds a control or format character (U+{ord(bad):04X})",
            "file",
            "invalid_file_name",
        )
    flat = unicodedata.normalize("NFKC", filename).translate(SLASH_LOOKALIKES).replace("\\", "/")
    name = flat.rsplit("/", 1)[-1].strip()
    if not name.strip(".") or len(name.encode()) > 255:
        raise JobRequestError(f"file name {filename!r} is not a usable file name", "file", "invalid_file_name")
    return name


class JobService:
    def __init__(self, cfg: JobsConfig, bases: dict[str, str]):
        """`bases`: base model names this server offers for fine-tuning -> the path (or id) it loads."""
        self.cfg, self.bases = cfg, dict(bases)
        self.base = cfg.base_recipe()  # fails at start-up, not at the first job, when the defaults are unusable
        self.store = Store(cfg.db_path)
        self.id = worker_id()  # owner name for validations run by this process

    # files -----------------------------------------------------------------------------
    def add_file(self, filename: str, purpose: str, stream: BinaryIO) -> dict:
        if purpose != "fine-tune":
            raise JobRequestError(f"purpose {purpose!r} is not supported by this server; use 'fine-tune'", "purpose")
        name = upload_name(filename or "")
        if not name.lower().endswith(UPLOAD_EXTENSIONS):
            raise JobRequestError(
                f"file {name!r}: fine-tuning files must be JSON Lines (.jsonl)", "file", "invalid_file_format"
            )
        file_id = new_id("file")
        self.cfg.files_dir.mkdir(parents=True, exist_ok=True)
        final = self.cfg.files_dir / f"{file_id}.jsonl"
        fd, tmp = tempfile.mkstemp(prefix=f".{file_id}.", dir=self.cfg.files_dir)
        h, size = hashlib.sha256(), 0
        try:  # written aside, then renamed: a crash never leaves half a file under a file id
            with os.fdopen(fd, "wb") as out:
                while block := stream.read(1 << 20):
                    size += len(block)
                    if size > self.cfg.max_file_bytes:
                        raise JobRequestError(
                            f"file {name!r} is larger than this server's limit of {self.cfg.max_file_bytes} bytes",
                            "file",
                            "file_too_large",
                        )
                    h.update(block)
                    out.write(block)
            if size == 0:
                raise JobRequestError(f"file {name!r} is empty", "file", "invalid_file_format")
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.store.add_file(file_id, name, purpose, size, h.hexdigest(), str(final))

    def file(self, file_id: str) -> dict:
        row = self.store.get_file(file_id)
        if row is None:
            raise LookupError(f"no file with id '{file_id}'")
        return row

    def delete_file(self, file_id: str) -> None:
        row = self.file(file_id)
        busy = self.store.delete_file(file_id)
        if busy:
            raise JobRequestError(
                f"file '{file_id}' is used by job '{busy}', which has not finished; cancel it or wait",
                "file_id",
                "file_in_use",
            )
        if Path(row["path"]).parent == self.cfg.files_dir:  # only what the server stored itself
            Path(row["path"]).unlink(missing_ok=True)

    # jobs ------------------------------------------------------------------------------
    def job(self, job_id: str) -> dict:
        row = self.store.get_job(job_id)
        if row is None:
            raise LookupError(f"no fine-tuning job with id '{job_id}'")
        return row

    def _training_file(self, file_id: str, param: str) -> dict:
        row = self.store.get_file(file_id)
        if row is None:
            raise JobRequestError(
                f"{param} '{file_id}' does not exist — upload it with POST /v1/files (purpose=fine-tune)",
                param,
                f"invalid_{param}",
            )
        if row["purpose"] != "fine-tune":
            raise JobRequestError(
                f"{param} '{file_id}' has purpose {row['purpose']!r}, not 'fine-tune'", param, f"invalid_{param}"
            )
        return row

    def create_job(self, req: CreateJobRequest) -> dict:
        if req.model not in self.bases:
            raise JobRequestError(
                f"model {req.model!r} cannot be fine-tuned here; this server fine-tunes "
                f"{', '.join(sorted(self.bases))}",
                "model",
                "model_not_available",
            )
        if req.suffix is not None and not SUFFIX_RE.match(req.suffix):
            raise JobRequestError("suffix: use 1-64 letters, digits, '.', '_' or '-'", "suffix")
        if req.integrations:
            raise JobRequestError(
                "integrations are not supported by this server", "integrations", "unsupported_parameter"
            )
        kind, hp = requested_method(req)
        train = self._training_file(req.training_file, "training_file")
        val = self._training_file(req.validation_file, "validation_file") if req.validation_file else None
        job_id = new_id("ftjob")
        name = model_name(req.model, req.suffix, job_id)
        if len(name) > 128:
            raise JobRequestError(
                f"the fine-tuned model's name {name!r} would exceed 128 characters; use a shorter suffix", "suffix"
            )
        seed = req.seed if req.seed is not None else random.randrange(2**31)
        resolved = resolve_hyperparameters(kind, hp, self.base)
        recipe = job_recipe(
            self.base,
            job_id,
            self.bases[req.model],
            train["path"],
            val["path"] if val else None,
            kind,
            resolved,
            seed,
            self.cfg.runs_dir,
            f"ft:{req.model}:{req.suffix or ''}",
        )
        row = self.store.add_job(
            {
                "id": job_id,
                "status": "validating_files",
                "model": req.model,
                "base_path": self.bases[req.model],
                "training_file": train["id"],
                "validation_file": val["id"] if val else None,
                "method": {"type": kind, "requested": hp},
                "hyperparameters": resolved,
                "recipe": recipe.to_dict(),
                "suffix": req.suffix,
                "seed": seed,
                "metadata": req.metadata,
                "run_dir": str(recipe.run_path()),
            },
            f"Created fine-tuning job: {job_id}",
        )
        return row

    def validate(self, job_id: Optional[str] = None) -> Optional[dict]:
        return validate_job(self.store, self.id, job_id, lease_s=self.cfg.stale_after_s)

    def cancel(self, job_id: str) -> dict:
        job = self.job(job_id)
        if not self.store.cancel(job_id):
            raise JobRequestError(
                f"job '{job_id}' has already {job['status']}; only unfinished jobs can be cancelled",
                "fine_tuning_job_id",
                "job_not_cancellable",
            )
        return self.job(job_id)


def validate_job(
    store: Store, owner: str, job_id: Optional[str] = None, lease_s: float = DEFAULT_LEASE_S
) -> Optional[dict]:
    """Check one waiting job's files with the data stage (the named one, else the oldest):
    `queued` when they can train, `failed` with the bad lines named when not. None: nothing to do.
    The job is held under a lease of `lease_s`; a validation that outlives it is refused its result."""
    job = store.claim(owner, "validating_files", job_id, lease_s=lease_s)
    if job is None:
        return None
    store.add_event(job["id"], "Validating training file: " + job["training_file"], token=job["token"])
    kind = job["method"]["type"]
    error = None
    for param in ("training_file", "validation_file"):
        if job[param] and error is None:
            row = store.get_file(job[param])
            label = f"{param.replace('_', ' ')} {job[param]} ({row['filename']})" if row else job[param]
            error = (
                check_file(row["path"], kind, param, label)
                if row
                else {"code": f"invalid_{param}", "param": param, "message": f"{label} was deleted"}
            )
    if error is None:
        store.update_owned(
            job["id"],
            job["token"],
            status="queued",
            worker=None,
            lease_until=None,
            events=[("Files validated, moving job to queued state", "info")],
        )
    else:
        store.update_owned(
            job["id"],
            job["token"],
            status="failed",
            worker=None,
            lease_until=None,
            error=error,
            finished_at=int(time.time()),
            events=[(error["message"], "error")],
        )
    return store.get_job(job["id"])
