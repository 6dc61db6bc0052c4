"""One pure-ASGI middleware: request ids, body-size limit, security headers, access log."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hvelv.errors import error_body

log = logging.getLogger("hvelv.access")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# content types streamed by upload endpoints; everything else is buffered and size-limited
STREAMED = ("application/offset+octet-stream",)
# routes that stream their body whatever its content type (they enforce their own limits)
STREAMED_PATHS = re.compile(r"^/v1/projects/[^/]+/datasets/[^/]+/upload$")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
]


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, max_body: int, hsts: bool = False) -> None:
        self.app = app
        self.max_body = max_body
        self.headers = list(SECURITY_HEADERS)
        if hsts:
            self.headers.append((b"strict-transport-security", b"max-age=63072000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = {k.lower(): v for k, v in scope["headers"]}
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = {"status": 0}
        rid = request_id.encode()

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                own = message.get("headers", [])
                present = {name.lower() for name, _ in own}
                message["headers"] = [
                    *own,
                    *(h for h in self.headers if h[0] not in present),
                    (b"x-request-id", rid),
                ]
            await send(message)

        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        if (
            scope["method"] in ("POST", "PUT", "PATCH", "DELETE")
            and not content_type.startswith(STREAMED)
            and not STREAMED_PATHS.match(scope.get("path", ""))
        ):
            body = await self._read_limited(headers, receive)
            if body is None:
                await self._too_large(send_wrapped)
                self._log(scope, request_id, 413, start)
                return
            receive = _replay(body, receive)
        try:
            await self.app(scope, receive, send_wrapped)
        finally:
            self._log(scope, request_id, status_holder["status"] or 500, start)

    async def _read_limited(self, headers: dict[bytes, bytes], receive: Receive) -> bytes | None:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return None
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        payload = json.dumps(
            error_body("payload_too_large", f"request body larger than {self.max_body} bytes")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _log(self, scope: Scope, request_id: str, status: int, start: float) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        route: Any = scope.get("route")
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": scope["method"],
                "route": getattr(route, "path", None) or "(unmatched)",
                "status": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 2),
            },
        )


def _replay(body: bytes, original: Receive) -> Receive:
    """Hand the buffered body to the app once, then pass through (disconnect detection)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive
