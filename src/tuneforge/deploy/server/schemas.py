"""Request bodies (pydantic) and response bodies (plain dicts) in OpenAI's shapes.

Unknown request fields are ignored, as OpenAI's own clients send fields a server may
not know; fields that change the *meaning* of a request and that tuneforge does not
implement (tools, logprobs, penalties, ...) are rejected with a 400 instead, so a
client never silently gets something other than what it asked for.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[dict[str, Any]], None] = None

    def text(self) -> str:
        """Content as text; OpenAI's list-of-parts form is joined (text parts only)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"content part of type {part.get('type')!r} is not supported (text only)")
            parts.append(part["text"])
        return "".join(parts)


class _Sampling(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: Optional[int] = Field(None, ge=1)
    # greedy by default (not OpenAI's 1.0): a fine-tuned model should answer reproducibly
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    stop: Union[str, list[str], None] = Field(None, validate_default=True)
    seed: Optional[int] = None
    user: Optional[str] = None
    # accepted only at their neutral values (see `unsupported`)
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    logit_bias: Optional[dict[str, float]] = None
    logprobs: Union[bool, int, None] = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: Union[str, list[str], None]) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops

    def is_greedy(self) -> bool:
        return not self.temperature

    def unsupported(self) -> Optional[str]:
        """The first field set to a value this server does not implement, or None."""
        if self.presence_penalty or self.frequency_penalty:
            return "presence_penalty" if self.presence_penalty else "frequency_penalty"
        if self.logit_bias:
            return "logit_bias"
        if self.logprobs:
            return "logprobs"
        return None


class RagOptions(BaseModel):
    """Extension field `tuneforge_rag` of a chat request (retrieval settings for this request)."""

    model_config = ConfigDict(extra="forbid")
    top_k: Optional[int] = Field(None, ge=1)
    score_threshold: Optional[float] = Field(None, ge=-1.0, le=1.0)
    enabled: Optional[bool] = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    tuneforge_rag: Optional[RagOptions] = None  # extension: see tuneforge.deploy.server.rag
    max_completion_tokens: Optional[int] = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    tools: Optional[list[Any]] = None
    tool_choice: Any = None
    functions: Optional[list[Any]] = None
    response_format: Optional[dict[str, Any]] = None

    def requested_max_tokens(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens

    def unsupported(self) -> Optional[str]:
        if self.tools or self.functions:
            return "tools" if self.tools else "functions"
        if self.response_format and self.response_format.get("type", "text") != "text":
            return "response_format"
        return super().unsupported()


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]]
    max_tokens: Optional[int] = Field(16, ge=1)  # OpenAI's default for /v1/completions
    echo: bool = False
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def requested_max_tokens(self) -> Optional[int]:
        return self.max_tokens

    def unsupported(self) -> Optional[str]:
        if self.echo:
            return "echo"
        if self.suffix:
            return "suffix"
        if self.best_of and self.best_of > 1:
            return "best_of"
        return super().unsupported()


class AdapterLoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    path: str


# responses ---------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(rid: str, model: str, texts: list[str], finish: list[str], use: dict) -> dict:
    choices = [
        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f, "logprobs": None}
        for i, (t, f) in enumerate(zip(texts, finish))
    ]
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": use,
    }


def chat_chunk(rid: str, model: str, created: int, index: int, delta: dict, finish: Optional[str] = None) -> dict:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def completion(rid: str, model: str, texts: list[str], finish: list[str], use: dict) -> dict:
    choices = [
        {"index": i, "text": t, "finish_reason": f, "logprobs": None} for i, (t, f) in enumerate(zip(texts, finish))
    ]
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": use,
    }


def completion_chunk(rid: str, model: str, created: int, index: int, text: str, finish: Optional[str] = None) -> dict:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": index, "text": text, "finish_reason": finish, "logprobs": None}],
    }


def usage_chunk(rid: str, model: str, created: int, obj: str, use: dict) -> dict:
    """The final chunk of a stream with `stream_options.include_usage`: empty choices, usage set."""
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": use}


def model_card(name: str, created: int, parent: Optional[str], root: str) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "tuneforge", "root": root, "parent": parent}
