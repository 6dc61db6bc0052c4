"""One error shape for the whole API: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any


class HvelvError(Exception):
    """A failure with a stable machine code, a human message and an HTTP status."""

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


class InvalidInput(HvelvError):
    status = 422
    code = "invalid_input"


class Unauthenticated(HvelvError):
    status = 401
    code = "unauthenticated"

    def __init__(self, message: str = "authentication required", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class Forbidden(HvelvError):
    status = 403
    code = "forbidden"


class NotFound(HvelvError):
    status = 404
    code = "not_found"


class Conflict(HvelvError):
    status = 409
    code = "conflict"


class TooManyRequests(HvelvError):
    status = 429
    code = "too_many_requests"
