"""Request limits and OpenAI's error shape.

Every error the server returns is `{"error": {"message", "type", "param", "code"}}`
with `code` a string or null, so OpenAI clients raise their usual typed exceptions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from ...errors import APIError, error_body


@dataclass(frozen=True)
class Limits:
    max_tokens: int = 512  # largest `max_tokens` a request may ask for
    default_max_tokens: int = 256  # chat requests that give none (completions default to 16, as OpenAI)
    max_prompt_tokens: int = 2048  # longest prompt after the chat template is applied
    max_n: int = 4  # choices per request (`n` × prompts for /v1/completions)
    max_stop: int = 4  # stop sequences per request (OpenAI allows 4)
    max_body_bytes: int = 1 << 20  # request body size
    retry_after_s: int = 1  # `Retry-After` sent with a 429 when the queue is full


def check_request(limits: Limits, n_choices: int, max_tokens: int, stops: list[str]) -> None:
    """Limits that need no tokenizer; raises APIError(400) naming the offending param."""
    if n_choices > limits.max_n:
        raise APIError(
            400,
            f"n × prompts is {n_choices}, over this server's limit of {limits.max_n}",
            param="n",
            code="n_too_large",
        )
    if max_tokens > limits.max_tokens:
        raise APIError(
            400,
            f"max_tokens is {max_tokens}, over this server's limit of {limits.max_tokens}",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    if len(stops) > limits.max_stop:
        raise APIError(
            400,
            f"{len(stops)} stop sequences given; at most {limits.max_stop}",
            param="stop",
            code="too_many_stop_sequences",
        )


def check_prompt(limits: Limits, prompt_tokens: int, max_tokens: int, context: Optional[int], param: str) -> None:
    if prompt_tokens > limits.max_prompt_tokens:
        raise APIError(
            400,
            f"the prompt is {prompt_tokens} tokens, over this server's limit of {limits.max_prompt_tokens}",
            param=param,
            code="prompt_too_long",
        )
    if context and prompt_tokens + max_tokens > context:
        raise APIError(
            400,
            f"this model's context is {context} tokens; the prompt ({prompt_tokens}) plus "
            f"max_tokens ({max_tokens}) exceed it — shorten the prompt or lower max_tokens",
            param=param,
            code="context_length_exceeded",
        )


class BodySizeLimit:
    """ASGI middleware: 413 in OpenAI's shape for bodies over `max_bytes`.

    It checks Content-Length up front and also counts the bytes actually received, so
    a chunked body without a length cannot get past it. The body is buffered (it is
    small by construction) and replayed to the app.
    """

    def __init__(self, app: Any, max_bytes: int, path_limits: Optional[dict] = None):
        self.app, self.max_bytes = app, max_bytes
        self.path_limits = path_limits or {}  # exact path -> its own limit (file uploads)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        max_bytes = self.path_limits.get(scope["path"], self.max_bytes)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            return await self._reject(send, max_bytes)
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > max_bytes:
                return await self._reject(send, max_bytes)
            more = msg.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # afterwards: wait for http.disconnect, as the server would send it

        await self.app(scope, replay, send)

    async def _reject(self, send: Any, max_bytes: int) -> None:
        payload = json.dumps(
            error_body(
                f"request body is larger than this server's limit of {max_bytes} bytes",
                param=None,
                code="request_too_large",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
