"""Rendering pages: Jinja2 templates (autoescaped), the language, the CSRF token, and the
headers every portal page carries (a Content-Security-Policy that allows the portal's own style
sheet and nothing else: no scripts at all, forms only to the portal itself)."""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from hvelv.portal import cookies, i18n

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {"content-security-policy": CSP, "cache-control": "no-store"}
LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("hvelv.portal", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def language_of(request: Request) -> str:
    chosen = request.cookies.get(cookies.LANGUAGE)
    if chosen in i18n.LANGUAGES:
        return chosen
    return i18n.accept_language(request.headers.get("accept-language"))


def render(
    request: Request,
    name: str,
    *,
    status: int = 200,
    session_id: str | None = None,
    token: str | None = None,
    signed_in: bool = False,
    **context: Any,
) -> HTMLResponse:
    """Render ``name`` in the browser's language. With ``token`` the session cookie is renewed
    (the idle timeout starts again)."""
    language = language_of(request)
    binding, new_binding = cookies.csrf_binding(request)

    def t(key: str, **params: Any) -> str:
        return i18n.translate(language, key, **params)

    html = (
        environment()
        .get_template(name)
        .render(
            t=t,
            lang=language,
            languages=i18n.LANGUAGES,
            native=i18n.NATIVE,
            csrf=cookies.csrf_token(request, binding, session_id),
            # the language form posts to a public route, which knows no session
            csrf_public=cookies.csrf_token(request, binding, None),
            here=request.url.path,
            signed_in=signed_in,
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
    if new_binding:
        cookies.set_cookie(request, response, cookies.CSRF, binding, 24 * 3600)
    if token is not None:
        cookies.renew_session(request, response, token)
    return response


def redirect(to: str) -> Response:
    return Response(status_code=303, headers={"location": to, **PAGE_HEADERS})
