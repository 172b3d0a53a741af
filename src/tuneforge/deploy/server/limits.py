"""Request limits and OpenAI's error shape.

Every error the server returns is `{"error": {"message", "type", "param", "code"}}`
with `code` a string or null, so OpenAI clients raise their usual typed exceptions.
"""

from __future__ import annotations

import hmac
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
    max_stop_chars: int = 256  # characters per stop sequence (each is scanned for at every token)
    max_prompts: int = 64  # prompts in one /v1/completions request (each is tokenised)
    max_body_bytes: int = 1 << 20  # request body size
    retry_after_s: int = 1  # `Retry-After` sent with a 429 when the queue is full


def check_prompt_count(limits: Limits, n_prompts: int) -> None:
    """A /v1/completions prompt list is refused by its length, before any prompt is tokenised."""
    if n_prompts > limits.max_prompts:
        raise APIError(
            400,
            f"{n_prompts} prompts given; this server takes at most {limits.max_prompts} per request",
            param="prompt",
            code="too_many_prompts",
        )


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
    longest = max(map(len, stops), default=0)
    if longest > limits.max_stop_chars:
        raise APIError(
            400,
            f"a stop sequence is {longest} characters long; at most {limits.max_stop_chars}",
            param="stop",
            code="stop_too_long",
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


def key_ok(authorization: str, keys: list[bytes]) -> bool:
    """Whether an `Authorization` header carries one of the keys.

    Every key is compared (no early exit), so the time taken does not reveal which prefix matched.

    >>> key_ok("Bearer k1", [b"k0", b"k1"]), key_ok("Bearer k2", [b"k1"]), key_ok("k1", [b"k1"])
    (True, False, False)
    """
    scheme, _, token = authorization.partition(" ")
    given = token.strip().encode()
    return scheme.lower() == "bearer" and bool(given) and sum(hmac.compare_digest(given, k) for k in keys) > 0


UNAUTHORIZED = "missing or invalid API key: send 'Authorization: Bearer <key>'"


class KeyCheck:
    """ASGI middleware, outermost: a request without a valid key gets 401 from its headers alone.

    Nothing of the body is read (nor buffered, parsed or logged) before the key is checked, so
    an unauthenticated client cannot make the server hold an upload or answer 400 to bad JSON.
    `public` paths (the health check) need no key.
    """

    def __init__(self, app: Any, keys: list[bytes], public: tuple[str, ...] = ("/health",)):
        self.app, self.keys, self.public = app, keys, public

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if key_ok(headers.get(b"authorization", b"").decode("latin-1"), self.keys):
            return await self.app(scope, receive, send)
        await _send_json(send, 401, error_body(UNAUTHORIZED, "authentication_error", code="invalid_api_key"))


async def _send_json(send: Any, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


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
        msg = f"request body is larger than this server's limit of {max_bytes} bytes"
        await _send_json(send, 413, error_body(msg, param=None, code="request_too_large"))
