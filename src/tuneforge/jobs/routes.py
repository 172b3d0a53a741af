"""OpenAI's fine-tuning API on this server (`tuneforge serve --jobs DIR`):

    POST   /v1/files                               upload JSONL (multipart: file, purpose=fine-tune)
    GET    /v1/files[/{id}[/content]]              list (purpose, after, limit, order), retrieve, download
    DELETE /v1/files/{id}
    POST   /v1/fine_tuning/jobs                    create: model, training_file, validation_file, method,
                                                   hyperparameters, suffix, seed, metadata
    GET    /v1/fine_tuning/jobs[/{id}]             list (after, limit), retrieve
    POST   /v1/fine_tuning/jobs/{id}/cancel
    GET    /v1/fine_tuning/jobs/{id}/events        newest first (after, limit)
    GET    /v1/fine_tuning/jobs/{id}/checkpoints   newest first (after, limit)

A job's files are checked by the data stage right after it is created (`validating_files`
→ `queued`, or `failed` naming the bad lines). A worker (a thread of this server, and/or
`tuneforge jobs worker` processes on the same jobs folder) trains it, in a process of its own
per job (so a seeded request here never touches training's torch state); the result is served
as `ft:<base>:<suffix>:<id>` by this server as soon as the job has `succeeded`: an
in-process worker hot-loads it first, and models finished by other workers are picked up
within `poll_s` (and every finished job's model is loaded again at start-up).

(No `from __future__ import annotations`: FastAPI reads the route signatures.)
"""

import asyncio
import contextlib
import logging
from typing import Any, Optional

from ..errors import APIError

log = logging.getLogger(__name__)
MAX_PAGE = 100
# the multipart form around an uploaded file (boundaries, part headers, the purpose field): the body
# limit leaves room for it, so a file of exactly `max_file_bytes` passes and a larger one is refused
# by the upload itself, with a message naming the file
MULTIPART_SLACK = 64 << 10


class JobsMount:
    """Router factory for the server (`ServerSettings.routers`): the jobs API of `JobsConfig` cfg."""

    def __init__(self, cfg: Any):
        self.cfg = cfg

    def __call__(self, engine: Any, require_key: Any) -> Any:
        return jobs_router(engine, self.cfg, require_key)


def mount(cfg: Any) -> dict:
    """ServerSettings fields that add the jobs API for `JobsConfig` cfg to the server.

    >>> from tuneforge.jobs.spec import JobsConfig
    >>> fields = mount(JobsConfig(root="/tmp/jobs"))
    >>> fields["routers"][0].cfg.root, fields["path_limits"]
    ('/tmp/jobs', {'/v1/files': 104923136})
    """
    return {
        "routers": (JobsMount(cfg),),
        "path_limits": {"/v1/files": cfg.max_file_bytes + MULTIPART_SLACK},  # uploads of training data are larger
    }


def jobs_router(engine: Any, cfg: Any, require_key: Any) -> Any:
    """The router (its lifespan runs the worker thread and the model sync) for `JobsConfig` cfg."""
    from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Query, UploadFile
    from fastapi.responses import FileResponse

    from .objects import checkpoint_object, event_object, file_object, job_object, page
    from .service import JobService
    from .spec import CreateJobRequest, JobRequestError

    base_path = engine.get(engine.base_name).path
    service = JobService(cfg, {engine.base_name: base_path})
    store = service.store
    unservable: set = set()  # finished jobs whose model failed to load: reported once, not retried each poll

    def load_model(name: str, run_dir: str) -> None:
        if name not in {e.name for e in engine.models()}:
            engine.add_adapter(name, run_dir)

    def sync_models() -> None:
        """Serve every succeeded job's model that is not served yet (jobs run by other workers)."""
        rows, _ = store.list_jobs(limit=10_000, status="succeeded")
        for job in rows:
            name = job["fine_tuned_model"]
            if name in unservable or name in {e.name for e in engine.models()}:
                continue
            try:
                load_model(name, job["run_dir"])
            except Exception as exc:  # a deleted run directory must not stop the others from loading
                unservable.add(name)
                log.warning("fine-tuned model %s (job %s) cannot be served: %s", name, job["id"], exc)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        from .worker import Worker

        await asyncio.to_thread(sync_models)
        worker = Worker(cfg, on_model=load_model, log=log.info).start() if cfg.worker else None

        async def poll() -> None:
            while True:
                await asyncio.sleep(cfg.poll_s)
                try:
                    await asyncio.to_thread(sync_models)
                except Exception as exc:  # keep polling; the next round may succeed
                    log.warning("jobs model sync failed: %s", exc)

        task = asyncio.create_task(poll())
        try:
            yield
        finally:
            task.cancel()
            if worker is not None:  # a running job is re-queued, to resume from its checkpoint on restart
                await asyncio.to_thread(worker.stop)

    router = APIRouter(dependencies=[Depends(require_key)], lifespan=lifespan)

    def bad(exc: JobRequestError, status: int = 400) -> APIError:
        return APIError(status, str(exc), param=exc.param, code=exc.code)

    def not_found(exc: LookupError, param: str) -> APIError:
        return APIError(404, str(exc).strip("'\""), param=param, code="not_found")

    async def call(fn: Any, *args: Any, param: str = "id") -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except JobRequestError as exc:
            raise bad(exc, 409 if exc.code in ("file_in_use", "job_not_cancellable") else 400) from None
        except LookupError as exc:
            raise not_found(exc, param) from None

    def limit_of(limit: int) -> int:
        if not 1 <= limit <= MAX_PAGE:
            raise APIError(400, f"limit must be between 1 and {MAX_PAGE}", param="limit", code="invalid_limit")
        return limit

    # files -------------------------------------------------------------------------------
    @router.post("/v1/files")
    async def upload(file: UploadFile = File(...), purpose: str = Form(...)):
        row = await call(service.add_file, file.filename, purpose, file.file)
        return file_object(row)

    @router.get("/v1/files")
    async def list_files(
        purpose: Optional[str] = None, after: Optional[str] = None, limit: int = Query(100), order: str = Query("desc")
    ):
        if order not in ("asc", "desc"):
            raise APIError(400, "order must be 'asc' or 'desc'", param="order")
        rows, more = await asyncio.to_thread(store.list_files, purpose, after, limit_of(limit), order)
        return page(rows, more, file_object)

    @router.get("/v1/files/{file_id}")
    async def get_file(file_id: str):
        return file_object(await call(service.file, file_id, param="file_id"))

    @router.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str):
        row = await call(service.file, file_id, param="file_id")
        return FileResponse(row["path"], media_type="application/octet-stream", filename=row["filename"])

    @router.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str):
        await call(service.delete_file, file_id, param="file_id")
        return {"id": file_id, "object": "file", "deleted": True}

    # jobs --------------------------------------------------------------------------------
    @router.post("/v1/fine_tuning/jobs")
    async def create_job(body: CreateJobRequest, background: BackgroundTasks):
        row = await call(service.create_job, body)
        background.add_task(service.validate, row["id"])  # after the response: creation answers at once
        return job_object(row)

    @router.get("/v1/fine_tuning/jobs")
    async def list_jobs(after: Optional[str] = None, limit: int = Query(20)):
        rows, more = await asyncio.to_thread(store.list_jobs, after, limit_of(limit))
        return page(rows, more, job_object)

    @router.get("/v1/fine_tuning/jobs/{job_id}")
    async def get_job(job_id: str):
        return job_object(await call(service.job, job_id, param="fine_tuning_job_id"))

    @router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str):
        return job_object(await call(service.cancel, job_id, param="fine_tuning_job_id"))

    @router.get("/v1/fine_tuning/jobs/{job_id}/events")
    async def job_events(job_id: str, after: Optional[str] = None, limit: int = Query(20)):
        await call(service.job, job_id, param="fine_tuning_job_id")
        rows, more = await asyncio.to_thread(store.list_events, job_id, after, limit_of(limit))
        return page(rows, more, event_object)

    @router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    async def job_checkpoints(job_id: str, after: Optional[str] = None, limit: int = Query(10)):
        await call(service.job, job_id, param="fine_tuning_job_id")
        rows, more = await asyncio.to_thread(store.list_checkpoints, job_id, after, limit_of(limit))
        return page(rows, more, checkpoint_object)

    return router
