"""`POST /v1/feedback`: a thumbs up/down and/or a corrected answer on one logged request.

    {"request_id": "chatcmpl-…", "rating": "up" | "down", "correction": "…", "comment": "…"}

Stored in the request log's `feedback` table next to the request it rates (see
requestlog.py); `tuneforge data from-feedback` turns it into training data. The
request id is the response `id` (also the `X-Request-Id` header).
"""

import asyncio
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import APIError


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(..., min_length=1, max_length=200)
    rating: Optional[Literal["up", "down"]] = None
    correction: Optional[str] = Field(None, max_length=100_000)
    comment: Optional[str] = Field(None, max_length=10_000)

    @model_validator(mode="after")
    def _something(self) -> "FeedbackRequest":
        if self.rating is None and not (self.correction or "").strip():
            raise ValueError("give a rating ('up' or 'down') and/or a non-empty correction")
        return self


def feedback_router(settings: Any, reqlog: Any, require_key: Any) -> Any:
    from fastapi import APIRouter, Depends

    from .requestlog import find_request, write_feedback

    router = APIRouter(dependencies=[Depends(require_key)])

    @router.post("/v1/feedback")
    async def feedback(body: FeedbackRequest):
        if reqlog is None or not settings.request_log:
            raise APIError(
                400,
                "feedback is stored with the request log, which is off on this server — start it "
                "with --request-log PATH",
                code="request_log_disabled",
            )
        await asyncio.to_thread(reqlog.flush)  # the rated request's row may still be queued for writing
        row = await asyncio.to_thread(find_request, settings.request_log, body.request_id)
        if row is None:
            raise APIError(
                404,
                f"no request with id '{body.request_id}' in the request log",
                param="request_id",
                code="request_not_found",
            )
        stored = await asyncio.to_thread(
            write_feedback, settings.request_log, body.request_id, body.rating, body.correction, body.comment
        )
        return {
            "object": "feedback",
            "id": body.request_id,
            "request_id": body.request_id,
            "rating": body.rating,
            "correction": body.correction,
            "model": row["model"],
            "created_at": stored["ts"],
            "has_content": row["prompt"] is not None,
        }

    return router
