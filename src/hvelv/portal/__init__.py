"""The participant portal: server-rendered, accessible pages in Norwegian and English where
participants (or their guardians) sign in from an invitation and see and change their consent.

See docs/portal.md. :func:`install` adds the pages to the app and makes errors under
``/portal`` render as pages instead of JSON.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

PREFIX = "/portal"

_CONFLICTS = {
    "consent_participant_under_age": "error.under_age",
    "consent_proxy_ended": "error.proxy_ended",
    "consent_proxy_not_representing": "error.proxy_ended",
    "request_answered": "error.request_answered",
}
_ENDED = {
    "session_idle": "ended.session_idle",
    "session_ended": "ended.session_ended",
}


def error_page(request: Request, status: int, code: str, message: str) -> Response:
    """The page for an error under /portal (signed out, not found, a stale form, a refusal)."""
    from hvelv.portal import cookies
    from hvelv.portal.render import render

    heading, text = "error.title", "error.generic"
    params: dict[str, object] = {}
    if status == 409:
        text = _CONFLICTS.get(code, "error.conflict")
        params = {"age": request.app.state.platform.settings.consent_age_of_majority}
    elif status == 401:
        heading = "ended.title"
        text = _ENDED.get(code, "ended.unauthenticated")
        if "representation" in message:
            text = "ended.representation"
    elif code == "csrf":
        text = "error.csrf"
    elif status == 404 or status == 422:
        status, text = 404, "error.not_found"
    response = render(
        request, "message.html", status=status, heading=heading, message=text, params=params
    )
    if status == 401:
        cookies.clear_cookie(request, response, cookies.SESSION)
    return response


def install(app: FastAPI) -> None:
    from hvelv.portal.routes import router

    app.include_router(router)
    app.state.page_errors = (PREFIX, error_page)
