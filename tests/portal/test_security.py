"""The portal's security properties against the live server: headers, cookie flags, CSRF on
every form, the idle timeout and the signed session cookie."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import NoResultFound

from hvelv.app import create_app
from hvelv.consent import access
from hvelv.platform import Platform
from hvelv.portal import cookies
from tests.portal.conftest import Portal

pytestmark = pytest.mark.backend  # a real browser and a live server


def _csrf(html: str) -> str:
    """The CSRF token of the page's last form (the first is the language form's, which posts
    to a public route and is not bound to the session)."""
    found = re.findall(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, html[:500]
    return str(found[-1])


def _session_token(portal: Portal, which: str = "participant") -> str:
    person = portal.participant(which)
    with portal.platform.db.write() as session:
        opened = access.open_session(
            session, portal.platform.settings, person, None, assurance="low"
        )
    return opened.token


@pytest.fixture
def client(portal: Portal) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=portal.url) as http:
        yield http


def test_pages_send_a_strict_policy_and_strict_cookies(
    portal: Portal, client: httpx.Client
) -> None:
    token = portal.invitation("participant").split("token=")[1]
    response = client.get("/portal/invitation", params={"token": token})
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    directives = {d.split()[0]: d for d in (p.strip() for p in csp.split(";"))}
    assert directives["default-src"] == "default-src 'none'"
    assert directives["style-src"] == "style-src 'self'"
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert "script-src" not in directives
    assert "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "<script" not in response.text
    assert "style=" not in response.text
    set_cookies = response.headers.get_list("set-cookie")
    assert len(set_cookies) == 2
    for header in set_cookies:
        lowered = header.lower()
        assert "httponly" in lowered
        assert "samesite=strict" in lowered
        assert "path=/portal" in lowered
        assert "secure" not in lowered  # plain http on loopback; see the TLS test
    css = client.get("/portal/static/portal.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")


def test_behind_tls_the_cookies_are_secure(platform: Platform) -> None:
    settings = platform.settings.model_copy(update={"secure_cookies": True})
    secure = Platform.build(settings, platform.db, platform.keyring)
    with TestClient(create_app(secure)) as test_client:
        response = test_client.get("/portal/sign-in")
    # no invitation: the page says so, and still sets its CSRF binding cookie securely
    assert response.status_code == 401
    for header in response.headers.get_list("set-cookie"):
        assert "secure" in header.lower(), header


def test_forms_without_the_right_csrf_token_change_nothing(
    portal: Portal, client: httpx.Client
) -> None:
    token = portal.invitation("participant").split("token=")[1]
    page = client.get("/portal/invitation", params={"token": token})
    good = _csrf(page.text)
    for bad in ("", "0" * 64, good[:-1] + ("0" if good[-1] != "0" else "1")):
        refused = client.post("/portal/sign-in/code", data={"csrf": bad})
        assert refused.status_code == 403
        assert "Skjemaet var for gammelt" in refused.text or "form was too old" in refused.text
    with pytest.raises(NoResultFound):  # no code was sent
        portal.last_code()
    # another browser's token does not work with this browser's binding cookie
    with httpx.Client(base_url=portal.url) as other:
        theirs = _csrf(other.get("/portal/invitation", params={"token": token}).text)
    assert theirs != good
    assert client.post("/portal/sign-in/code", data={"csrf": theirs}).status_code == 403
    sent = client.post("/portal/sign-in/code", data={"csrf": good})
    assert sent.status_code == 303
    assert portal.last_code()

    # signed in, a token made before sign-in (not bound to the session) is refused
    client.cookies.set(
        cookies.SESSION,
        cookies.session_value(portal.platform, _session_token(portal)),
        path="/portal",
    )
    overview = client.get("/portal/")
    assert overview.status_code == 200
    bound = _csrf(overview.text)
    assert bound != good
    before = len(portal.events())
    refused = client.post("/portal/withdraw", data={"csrf": good, "scope": "stop_use"})
    assert refused.status_code == 403
    assert len(portal.events()) == before
    accepted = client.post("/portal/withdraw", data={"csrf": bound, "scope": "stop_use"})
    assert accepted.status_code == 303
    assert len(portal.events()) == before + 1


def test_the_idle_timeout_and_a_forged_cookie_sign_out(
    portal: Portal, client: httpx.Client
) -> None:
    token = _session_token(portal)
    idle = portal.platform.settings.portal_idle_seconds
    stale = cookies.session_value(portal.platform, token, now=time.time() - idle - 5)
    client.cookies.set(cookies.SESSION, stale, path="/portal")
    response = client.get("/portal/")
    assert response.status_code == 401
    assert "fordi du ikke har gjort noe på en stund" in response.text
    assert (
        'hvelv_portal=""' in response.headers["set-cookie"]
        or "Max-Age=0" in response.headers["set-cookie"]
    )
    # moving the time forward without the key does not help
    _, _, mac = stale.rpartition("~")
    forged = f"{token}~{int(time.time())}~{mac}"
    client.cookies.clear()
    client.cookies.set(cookies.SESSION, forged, path="/portal")
    assert client.get("/portal/").status_code == 401
    # a fresh cookie works, and every page renews it
    client.cookies.clear()
    client.cookies.set(
        cookies.SESSION, cookies.session_value(portal.platform, token), path="/portal"
    )
    fresh = client.get("/portal/history")
    assert fresh.status_code == 200
    renewed = [h for h in fresh.headers.get_list("set-cookie") if h.startswith(cookies.SESSION)]
    assert len(renewed) == 1
    assert renewed[0].startswith(f"{cookies.SESSION}={token}~")
    # the bare token (without the portal's MAC) is not a portal cookie
    client.cookies.clear()
    client.cookies.set(cookies.SESSION, token, path="/portal")
    assert client.get("/portal/").status_code == 401


def test_unknown_portal_addresses_are_pages_not_json(portal: Portal, client: httpx.Client) -> None:
    for path in ("/portal/nowhere", "/portal/studies/not-a-key"):
        response = client.get(path)
        assert response.status_code in (401, 404)
        assert response.headers["content-type"].startswith("text/html")
        assert "content-security-policy" in response.headers
