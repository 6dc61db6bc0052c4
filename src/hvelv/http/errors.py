"""Exception handlers: every error leaves as ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hvelv.errors import HvelvError, error_body

log = logging.getLogger("hvelv.http")

_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _page_error(request: Request, status: int, code: str, message: str) -> Response | None:
    """Server-rendered pages (``app.state.page_errors = (prefix, handler)``) answer errors
    with a page rather than JSON."""
    hook = getattr(request.app.state, "page_errors", None)
    if hook is None or not request.url.path.startswith(hook[0]):
        return None
    response: Response = hook[1](request, status, code, message)
    return response


async def _hvelv_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HvelvError)
    page = _page_error(request, exc.status, exc.code, exc.message)
    if page is not None:
        return page
    return _json(exc.status, exc.body(), exc.headers)


def _clean(errors: Any) -> list[dict[str, Any]]:
    """Validation errors without the offending input (it may be a password)."""
    cleaned = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        cleaned.append({"loc": loc, "msg": str(err.get("msg", "")), "type": err.get("type")})
    return cleaned


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    page = _page_error(request, 422, "invalid_input", "invalid input")
    if page is not None:
        return page
    details = _clean(exc.errors())
    if any(d["type"] == "json_invalid" for d in details):
        return _json(
            400, error_body("malformed_json", "the request body is not valid JSON", details)
        )
    fields = ", ".join(".".join(d["loc"]) for d in details[:5])
    return _json(422, error_body("invalid_input", f"invalid input: {fields}", details))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES.get(exc.status_code, "error")
    page = _page_error(request, exc.status_code, code, str(exc.detail))
    if page is not None:
        return page
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "error"
    message = exc.detail if isinstance(exc.detail, str) else phrase
    return _json(exc.status_code, error_body(code, message), dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception(
        "unhandled error", extra={"request_id": getattr(request.state, "request_id", None)}
    )
    return _json(500, error_body("internal_error", "internal error; see the server log"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(HvelvError, _hvelv_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
