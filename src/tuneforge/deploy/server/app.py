"""FastAPI app factory: OpenAI-compatible routes over an `Engine`.

    GET  /health                 no auth
    GET  /v1/models[/{id}]       base model + adapters
    POST /v1/chat/completions    stream or not
    POST /v1/completions         stream or not
    GET  /metrics                Prometheus text
    GET|POST /admin/adapters, DELETE /admin/adapters/{name}   only with an admin dir
    POST /v1/feedback            rating / correction of a logged request (feedback.py)
    /v1/files, /v1/fine_tuning/jobs/…   fine-tuning jobs API, mounted by `tuneforge.jobs.routes.mount`

Nothing happens at import; `create_app` builds everything from its arguments. (No
`from __future__ import annotations` here: FastAPI reads the route signatures, whose
types are imported inside `create_app`.)
"""

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ...errors import APIError, error_body, status_type
from ...monitor.requestlog import RequestLog, utc_now
from . import schemas
from .engine import AdapterError, Engine, Event, Job, ModelEntry, QueueFull, UnknownModel, adapter_folder
from .limits import (
    UNAUTHORIZED,
    BodySizeLimit,
    KeyCheck,
    Limits,
    check_prompt,
    check_prompt_count,
    check_request,
    key_ok,
)
from .metrics import Metrics
from .rag import rag_apply

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


@dataclass
class ServerSettings:
    api_keys: tuple = ()
    limits: Limits = field(default_factory=Limits)
    request_log: Optional[str] = None  # SQLite path; None: no request log
    log_content: bool = False  # also store prompts and completions in the request log
    admin_dir: Optional[str] = None  # enables /admin/adapters for folders under it
    disconnect_poll_s: float = 0.25  # how often a waiting request checks that its client is still there
    rag: Optional[Any] = None  # tuneforge.deploy.server.rag.RagRouter: retrieval per model (chat only)
    # factories (engine, require_key) -> APIRouter mounted after the built-in routes, and per-path
    # body limits: how a layer above adds its API (the jobs API: `tuneforge.jobs.routes.mount`)
    routers: tuple = ()
    path_limits: Optional[dict] = None


@dataclass
class Call:
    """What one completion request did; filled as it runs, then logged once."""

    route: str
    model: str
    rid: str
    t0: float = field(default_factory=time.monotonic)
    ts: str = field(default_factory=utc_now)
    entry: Optional[ModelEntry] = None
    stream: bool = False
    n: int = 1
    prompt_tokens: int = 0
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    user: Optional[str] = None
    prompt: Any = None
    texts: dict = field(default_factory=dict)
    finish: dict = field(default_factory=dict)
    tokens: dict = field(default_factory=dict)
    queue_s: Optional[float] = None
    ended: bool = False
    error: Optional[str] = None
    citations: Optional[list] = None  # RAG passages the prompt was augmented with (response extension)

    def apply(self, ev: Event) -> None:
        if ev.kind == "start":
            self.queue_s = time.monotonic() - self.t0
        elif ev.kind == "delta":
            self.texts[ev.index] = self.texts.get(ev.index, "") + ev.text
        elif ev.kind == "finish":
            self.finish[ev.index], self.tokens[ev.index] = ev.finish, ev.tokens
        elif ev.kind == "end":
            self.ended = True
        elif ev.kind == "error":
            self.ended, self.error = True, ev.text

    def choices(self) -> tuple[list[str], list[str]]:
        idx = range(self.n)
        return [self.texts.get(i, "") for i in idx], [self.finish.get(i) or "stop" for i in idx]

    def usage(self) -> dict:
        return schemas.usage(self.prompt_tokens, sum(self.tokens.values()))


def create_app(engine: Engine, settings: ServerSettings, close_engine: bool = False) -> Any:
    from contextlib import asynccontextmanager

    from fastapi import APIRouter, Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if not settings.api_keys:
        raise AdapterError("give at least one API key (--api-key or TUNEFORGE_API_KEYS)")
    limits = settings.limits
    metrics = Metrics()
    metrics.gauge_from("tuneforge_queue_depth", lambda: engine.queue_depth)
    metrics.gauge_from("tuneforge_adapters_loaded", lambda: len(engine.adapters()))
    reqlog = (
        RequestLog(
            settings.request_log, settings.log_content, lambda: metrics.inc("tuneforge_request_log_errors_total")
        )
        if settings.request_log
        else None
    )

    def on_batch(rows: int, tokens: int, seconds: float) -> None:
        metrics.observe("tuneforge_batch_size", rows)
        metrics.set("tuneforge_batch_tokens_per_second", tokens / seconds if seconds > 0 else 0.0)

    engine.on_batch = on_batch

    @asynccontextmanager
    async def lifespan(app: Any):
        engine.start()
        yield
        if close_engine:
            engine.close()
        if reqlog is not None:
            reqlog.close()

    app = FastAPI(title="tuneforge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    keys = [k.encode() for k in settings.api_keys]
    app.add_middleware(
        BodySizeLimit,
        max_bytes=limits.max_body_bytes,  # uploads of training data are larger
        path_limits=settings.path_limits,
    )
    app.add_middleware(KeyCheck, keys=keys)  # added last = runs first: the key before any byte of the body
    app.state.engine, app.state.metrics, app.state.request_log, app.state.settings = engine, metrics, reqlog, settings

    # errors in OpenAI's shape ------------------------------------------------------
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        param = loc[0] if loc else None
        where = ".".join(loc)
        msg = f"{where}: {err['msg']}" if where else err["msg"]
        if request.url.path in (CHAT, COMPLETIONS):  # malformed requests are logged too (stage 7 counts them)
            body = exc.body if isinstance(exc.body, dict) else {}
            model = body.get("model") if isinstance(body.get("model"), str) else ""
            finish(Call(request.url.path, model, f"invalid-{uuid.uuid4().hex[:24]}"), 400, "invalid_request")
        return JSONResponse(error_body(msg, param=param, code="invalid_request"), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse(
            error_body(str(exc.detail), status_type(exc.status_code)),
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error"), 500)

    # auth ------------------------------------------------------------------------
    async def require_key(request: Request) -> None:
        # KeyCheck already refused keyless requests; this keeps each router safe on its own
        if not key_ok(request.headers.get("authorization", ""), keys):
            raise APIError(401, UNAUTHORIZED, "authentication_error", code="invalid_api_key")

    api = APIRouter(dependencies=[Depends(require_key)])

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": len(engine.models()), "queue_depth": engine.queue_depth}

    # models ----------------------------------------------------------------------
    def card(e: ModelEntry) -> dict:
        return schemas.model_card(e.name, e.created, None if e.is_base else engine.base_name, engine.base_name)

    @api.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [card(e) for e in engine.models()]}

    @api.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        return card(lookup(model_id))

    def lookup(name: str) -> ModelEntry:
        try:
            return engine.get(name)
        except UnknownModel:
            raise not_found(name) from None

    def not_found(name: str) -> APIError:
        served = ", ".join(e.name for e in engine.models())
        return APIError(
            404,
            f"the model '{name}' does not exist on this server (serving: {served})",
            param="model",
            code="model_not_found",
        )

    @contextlib.contextmanager
    def pinned(name: str):
        """The model entry, kept loaded while the request prepares its job (see `Engine.pin`)."""
        try:
            entry = engine.pin(name)
        except UnknownModel:
            raise not_found(name) from None
        try:
            yield entry
        finally:
            engine.unpin(entry)

    # completions -----------------------------------------------------------------
    @contextlib.contextmanager
    def logged_failures(call: Call):
        """A request that fails before its response starts is still logged once, with its status."""
        try:
            yield
        except APIError as exc:
            finish(call, exc.status, exc.code or exc.type)
            raise
        except Exception:
            finish(call, 500, "server_error")
            raise

    # Every refusal that needs no tokens comes first (limits, then queue room), so a 4xx or a 429
    # costs no templating or tokenising; those then run off the event loop, which keeps
    # answering /health and shedding load while a long prompt is tokenised.
    @api.post(CHAT)
    async def chat_completions(body: schemas.ChatCompletionRequest, request: Request):
        call = Call(CHAT, body.model, f"chatcmpl-{uuid.uuid4().hex[:24]}")
        with logged_failures(call), pinned(body.model) as entry:
            call.entry = entry
            try:
                messages = [{"role": m.role, "content": m.text()} for m in body.messages]
            except ValueError as exc:
                raise APIError(400, str(exc), param="messages", code="unsupported_content") from None
            admit(call, body, 1)
            if settings.rag is not None or body.tuneforge_rag is not None:  # RAG: context into the last user turn
                messages, call.citations = await rag_apply(settings.rag, entry.name, messages, body.tuneforge_rag)
            call.prompt = messages
            ids = await asyncio.to_thread(engine.chat_prompt, entry, messages)
            return await complete(request, call, body, [ids], "messages")

    @api.post(COMPLETIONS)
    async def completions(body: schemas.CompletionRequest, request: Request):
        call = Call(COMPLETIONS, body.model, f"cmpl-{uuid.uuid4().hex[:24]}")
        with logged_failures(call), pinned(body.model) as entry:
            call.entry = entry
            prompts = body.prompts()
            check_prompt_count(limits, len(prompts))
            if not prompts or any(not isinstance(p, str) for p in prompts):
                raise APIError(400, "prompt must be a string or a non-empty list of strings", param="prompt")
            admit(call, body, len(prompts))
            call.prompt = body.prompt
            ids = await asyncio.to_thread(lambda: [engine.text_prompt(p) for p in prompts])
            return await complete(request, call, body, ids, "prompt")

    def admit(call: Call, body: Any, n_prompts: int) -> None:
        """The checks that need no tokens: unsupported fields, limits, room in the queue."""
        call.stream, call.n, call.max_tokens = body.stream, body.n * n_prompts, body.requested_max_tokens()
        call.temperature, call.user = body.temperature, body.user  # a refusal is logged with them
        bad = body.unsupported()
        if bad:
            raise APIError(400, f"'{bad}' is not supported by this server", param=bad, code="unsupported_parameter")
        # without max_tokens the default applies, and what the context leaves can only lower it
        check_request(limits, body.n * n_prompts, body.requested_max_tokens() or limits.default_max_tokens, body.stop)
        if not engine.has_room():
            raise busy(call)

    def busy(call: Call) -> APIError:
        metrics.inc("tuneforge_queue_rejected_total", call.entry.name)
        return APIError(
            429,
            "the server is busy (request queue full); retry after a moment",
            "rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(limits.retry_after_s)},
        )

    async def complete(request: Any, call: Call, body: Any, prompts: list, param: str):
        longest, max_tokens = max(len(p) for p in prompts), body.requested_max_tokens()
        if max_tokens is None and engine.context_length:  # as OpenAI: by default, what the context leaves
            max_tokens = max(1, min(limits.default_max_tokens, engine.context_length - longest))
        max_tokens = max_tokens or limits.default_max_tokens
        call.max_tokens = max_tokens
        call.prompt_tokens = sum(len(p) for p in prompts)  # each prompt counts once, whatever `n`
        check_prompt(limits, longest, max_tokens, engine.context_length, param)

        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        job = Job(
            call.entry,
            prompts,
            max_tokens,
            lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev),
            body.n,
            body.stop,
            body.temperature,
            body.top_p,
            body.seed,
        )
        try:
            engine.submit(job)
        except QueueFull:  # filled up while this request was tokenised
            raise busy(call) from None
        headers = {"X-Request-Id": call.rid}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                sse(request, call, job, queue, include_usage),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache"},
            )
        next_event = events(request, queue)
        try:
            while not call.ended:
                ev = await next_event()
                if ev is None:  # client gone: stop generating for it
                    job.cancel()
                    finish(call, 499, "client_disconnected")
                    return PlainTextResponse("", 499)
                call.apply(ev)
        except asyncio.CancelledError:
            job.cancel()
            finish(call, 499, "client_disconnected")
            raise
        if call.error:
            raise APIError(500, call.error, "server_error", code="generation_failed")
        texts, reasons = call.choices()
        build = schemas.chat_completion if call.route == CHAT else schemas.completion
        out = build(call.rid, call.model, texts, reasons, call.usage())
        if call.citations is not None:
            out["tuneforge_citations"] = call.citations
        finish(call, 200)
        return JSONResponse(out, headers=headers)

    def events(request: Any, queue: asyncio.Queue):
        """A coroutine function: each call returns the request's next engine event, or None once
        its client has gone.

        The client is checked every `disconnect_poll_s` even while tokens keep coming: a
        non-streaming request writes nothing until it ends, so only this check notices that
        its client left and stops the generation."""
        checked = time.monotonic()

        async def next_event() -> Optional[Event]:
            nonlocal checked
            while True:
                if time.monotonic() - checked >= settings.disconnect_poll_s:
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        return None
                try:
                    return await asyncio.wait_for(queue.get(), settings.disconnect_poll_s)
                except asyncio.TimeoutError:
                    pass

        return next_event

    async def sse(request: Any, call: Call, job: Job, queue: asyncio.Queue, include_usage: bool):
        created, chat = int(time.time()), call.route == CHAT
        obj = "chat.completion.chunk" if chat else "text_completion"
        status, code = 200, None

        def chunk(index: int, text: Optional[str] = None, reason: Optional[str] = None, role: bool = False) -> str:
            if chat:
                delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
                data = schemas.chat_chunk(call.rid, call.model, created, index, delta, reason)
                if role and call.citations is not None:
                    data["tuneforge_citations"] = call.citations
            else:
                data = schemas.completion_chunk(call.rid, call.model, created, index, text or "", reason)
            return f"data: {json.dumps(data)}\n\n"

        try:
            if chat:
                for i in range(call.n):
                    yield chunk(i, role=True)
            next_event = events(request, queue)
            while not call.ended:
                ev = await next_event()
                if ev is None:
                    status, code = 499, "client_disconnected"
                    return
                call.apply(ev)
                if ev.kind == "delta":
                    yield chunk(ev.index, ev.text)
                elif ev.kind == "finish" and ev.finish != "cancelled":
                    yield chunk(ev.index, reason=ev.finish)
            if call.error:  # headers are sent: report in-band, as OpenAI does mid-stream
                status, code = 500, "generation_failed"
                yield f"data: {json.dumps(error_body(call.error, 'server_error', None, code))}\n\n"
            elif include_usage:
                yield f"data: {json.dumps(schemas.usage_chunk(call.rid, call.model, created, obj, call.usage()))}\n\n"
            yield "data: [DONE]\n\n"
        except BaseException:  # cancelled by the server (client gone, shutdown)
            status, code = 499, "client_disconnected"
            raise
        finally:
            if not call.ended:
                job.cancel()
            finish(call, status, code)

    def finish(call: Call, status: int, code: Optional[str] = None) -> None:
        """Metrics and the request-log row; never raises (a request must not fail for this)."""
        try:
            latency = time.monotonic() - call.t0
            name = call.entry.name if call.entry else "unknown"  # unknown names would explode label sets
            completion = sum(call.tokens.values())
            metrics.inc("tuneforge_requests_total", call.route, name, status)
            metrics.observe("tuneforge_request_latency_seconds", latency, call.route, name)
            if call.queue_s is not None:
                metrics.observe("tuneforge_queue_wait_seconds", call.queue_s, name)
                gen_s = latency - call.queue_s
                if completion and gen_s > 0:
                    metrics.set("tuneforge_tokens_per_second", completion / gen_s, name)
            if status < 400 or status == 499:
                metrics.inc("tuneforge_prompt_tokens_total", name, by=call.prompt_tokens)
                metrics.inc("tuneforge_completion_tokens_total", name, by=completion)
            if status == 499:
                metrics.inc("tuneforge_cancelled_total", name)
            if reqlog is not None:
                texts, reasons = call.choices()
                reqlog.write(
                    ts=call.ts,
                    request_id=call.rid,
                    route=call.route,
                    model=call.model,
                    adapter=None if not call.entry or call.entry.is_base else call.entry.name,
                    stream=int(call.stream),
                    n=call.n,
                    status=status,
                    error_code=code,
                    finish_reason=("cancelled" if status == 499 else reasons[0] if call.finish else None),
                    prompt_tokens=call.prompt_tokens if status < 400 or status == 499 else 0,
                    completion_tokens=completion,
                    latency_ms=round(latency * 1000, 3),
                    queue_ms=None if call.queue_s is None else round(call.queue_s * 1000, 3),
                    temperature=call.temperature,
                    max_tokens=call.max_tokens,
                    user=call.user,
                    prompt=json.dumps(call.prompt),
                    completion=json.dumps(texts),
                )
        except Exception:
            metrics.inc("tuneforge_request_log_errors_total")

    # metrics -----------------------------------------------------------------------
    @api.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # admin ---------------------------------------------------------------------------
    def admin_root() -> Path:
        if not settings.admin_dir:
            raise APIError(
                403,
                "admin routes are off; start the server with --allow-admin-dir DIR to hot-load adapters from DIR",
                "permission_error",
                code="admin_disabled",
            )
        return Path(settings.admin_dir).resolve()

    @api.get("/admin/adapters")
    async def admin_list():
        admin_root()
        return {"object": "list", "data": [{**card(e), "path": e.path} for e in engine.adapters()]}

    @api.post("/admin/adapters")
    async def admin_load(body: schemas.AdapterLoadRequest):
        folder = inside(admin_root(), body.path)
        if body.name in {e.name for e in engine.models()}:
            raise APIError(409, f"a model named '{body.name}' is already served", param="name", code="model_exists")
        try:  # loading reads weights from disk: keep the event loop free
            entry = await asyncio.to_thread(engine.add_adapter, body.name, folder)
        except AdapterError as exc:
            raise APIError(400, str(exc), param="path", code="invalid_adapter") from None
        return JSONResponse({**card(entry), "path": entry.path}, 201)

    @api.delete("/admin/adapters/{name:path}")
    async def admin_unload(name: str):
        admin_root()
        entry = lookup(name)
        if entry.is_base:
            raise APIError(400, "the base model cannot be unloaded", param="name", code="invalid_request")
        await asyncio.to_thread(engine.remove_adapter, name)
        return {"id": name, "object": "model", "deleted": True}

    app.include_router(api)
    from ...monitor.feedback_api import feedback_router  # stage 7: POST /v1/feedback, stored with the request log

    app.include_router(feedback_router(settings, reqlog, require_key))
    for make_router in settings.routers:  # e.g. the fine-tuning jobs API; its lifespan runs the worker
        app.include_router(make_router(engine, require_key))
    return app


def inside(root: Path, given: str) -> Path:
    """`given` (absolute, or relative to root) as an adapter folder that lies under `root`.

    Paths are compared after resolving symlinks and `..`, for the folder and every file
    in it, so neither `../x` nor a symlink (to the folder, or to its weights) can escape.
    """
    p = Path(given).expanduser()
    p = (p if p.is_absolute() else root / p).resolve()

    def check(q: Path) -> None:
        if q != root and root not in q.parents:
            raise APIError(
                403,
                f"path '{given}' is outside the allowed admin directory",
                "permission_error",
                param="path",
                code="path_not_allowed",
            )

    check(p)
    if not p.is_dir():
        raise APIError(
            400, f"path '{given}' is not a folder under the admin directory", param="path", code="invalid_adapter"
        )
    try:
        folder = adapter_folder(p).resolve()
    except AdapterError as exc:
        raise APIError(400, str(exc).replace(str(p), given), param="path", code="invalid_adapter") from None
    check(folder)
    for f in folder.iterdir():
        check(f.resolve())
    return folder
