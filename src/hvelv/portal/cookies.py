"""The portal's cookies: the participant session, the pending invitation, the CSRF binding and
the language. All are HttpOnly and SameSite=Strict (Secure when ``settings.secure_cookies``)
and limited to ``/portal``.

* ``hvelv_portal`` — ``<hvp_ session token>~<last activity, unix seconds>~<MAC>``; the MAC
  (HMAC-SHA256, a key derived from the master key) covers the token and the time, so the idle
  timeout (``settings.portal_idle_seconds``) cannot be stretched by the browser. Every page
  renews it; the session itself still ends at ``participant_session_ttl_seconds``.
* ``hvelv_invitation`` — the ``hvi_`` invitation token between opening the link and signing in,
  so it leaves the address bar after the first page.
* ``hvelv_csrf`` — a random value; forms carry ``HMAC(key, value + session id)`` (a signed
  double submit bound to the session), checked on every POST.
* ``hvelv_lang`` — ``nb``, ``nn`` or ``en``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from fastapi import Request, Response

from hvelv.errors import Unauthenticated
from hvelv.platform import Platform

SESSION = "hvelv_portal"
INVITATION = "hvelv_invitation"
CSRF = "hvelv_csrf"
LANGUAGE = "hvelv_lang"
PATH = "/portal"
_SEP = "~"


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def _key(platform: Platform, label: str) -> bytes:
    return platform.keyring.derived(f"portal-{label}")


def _mac(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_platform(request).settings.secure_cookies,
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_platform(request).settings.secure_cookies,
    )


def session_value(platform: Platform, token: str, now: float | None = None) -> str:
    stamp = str(int(now if now is not None else time.time()))
    return _SEP.join((token, stamp, _mac(_key(platform, "session"), token, stamp)))


def session_token(request: Request) -> str | None:
    """The participant session token of the portal cookie, or None without one.

    Raises :class:`Unauthenticated` (``session_idle``) after the idle timeout, and
    (``invalid_token``) for a cookie that was not made here."""
    value = request.cookies.get(SESSION)
    if not value:
        return None
    platform = _platform(request)
    token, _, rest = value.partition(_SEP)
    stamp, _, mac = rest.partition(_SEP)
    if not stamp.isdigit() or not hmac.compare_digest(
        mac, _mac(_key(platform, "session"), token, stamp)
    ):
        raise Unauthenticated("invalid portal session", code="invalid_token")
    if time.time() - int(stamp) > platform.settings.portal_idle_seconds:
        raise Unauthenticated("signed out after a time without activity", code="session_idle")
    return token


def renew_session(request: Request, response: Response, token: str) -> None:
    platform = _platform(request)
    set_cookie(
        request,
        response,
        SESSION,
        session_value(platform, token),
        platform.settings.participant_session_ttl_seconds,
    )


def csrf_binding(request: Request) -> tuple[str, bool]:
    """The CSRF binding value of the browser, and whether it is new (to be set)."""
    value = request.cookies.get(CSRF, "")
    if len(value) == 43 and value.replace("-", "").replace("_", "").isalnum():
        return value, False
    return secrets.token_urlsafe(32), True


def csrf_token(request: Request, binding: str, session_id: str | None) -> str:
    return _mac(_key(_platform(request), "csrf"), binding, session_id or "-")


def csrf_valid(request: Request, submitted: str, session_id: str | None) -> bool:
    binding = request.cookies.get(CSRF)
    if not binding or not submitted:
        return False
    return hmac.compare_digest(submitted, csrf_token(request, binding, session_id))
