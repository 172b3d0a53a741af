"""The one base of every error a user can cause and fix (bad recipe, data, model source, ...).

The CLI turns any `TuneforgeError` into its message and exit code 2, never a traceback
(`cli/common.py`); the jobs worker records it as the job's error. Each subclass keeps the
built-in base it always had (`ValueError`, `RuntimeError`), so callers that catch those
still do.

>>> class DemoError(TuneforgeError, ValueError): ...
>>> isinstance(DemoError("x"), (TuneforgeError, ValueError))
True
"""

from __future__ import annotations

from typing import Any, Optional


class TuneforgeError(Exception):
    """A problem with what the user gave (its message says what and how to fix it)."""


# ----------------------------------------------------------------- the HTTP APIs' error contract
# (serving, feedback and jobs routes all answer errors in OpenAI's shape)
class APIError(Exception):
    """An error that becomes an HTTP response in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: Optional[str] = None,
        code: Optional[str] = None,
        headers: Optional[dict] = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type: str = "invalid_request_error", param: Optional[str] = None, code: Optional[str] = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def status_type(status: int) -> str:
    """OpenAI's error `type` for a bare HTTP status (404 from routing, 405, ...)."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"
