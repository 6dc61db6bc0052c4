"""Participant sessions answered from the authorization cache: a sign-out or an ended
representation through the server applies to the next request; a change by another process
within ``auth_cache_seconds``."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from hvelv.consent.models import ParticipantSession
from hvelv.db.engine import Database
from tests.consent.conftest import CHILD_BIRTH, Consent


def warm(consent: Consent, headers: dict[str, str]) -> None:
    """Two reads: the first fills the cache, the second is answered from it."""
    for _ in range(2):
        me = consent.client.get("/v1/participant/me", headers=headers)
        assert me.status_code == 200, me.text


def test_signing_out_applies_to_the_next_request(consent: Consent) -> None:
    headers = consent.participant(consent.enrol())
    warm(consent, headers)
    assert consent.client.post("/v1/participant/logout", headers=headers).status_code == 204
    after = consent.client.get("/v1/participant/me", headers=headers)
    assert after.status_code == 401
    assert consent.give(headers, hmb=True).status_code == 401


def test_an_ended_representation_applies_to_the_next_request(consent: Consent) -> None:
    child = consent.enrol(CHILD_BIRTH)
    proxy = consent.add_proxy(child)
    guardian = consent.participant(child, proxy_id=proxy["id"])
    warm(consent, guardian)
    assert consent.give(guardian, hmb=True).status_code == 201  # from the cached session
    ended = consent.client.post(
        f"{consent.base}/participants/{child}/proxies/{proxy['id']}/end", headers=consent.dm
    )
    assert ended.status_code == 200, ended.text
    refused = consent.client.get("/v1/participant/me", headers=guardian)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "session_ended"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_sign_out_by_another_process_applies_within_the_cache_time(consent: Consent) -> None:
    platform = consent.platform
    clock = Clock()
    platform.auth.clock = clock
    headers = consent.participant(consent.enrol())
    warm(consent, headers)
    other = Database(platform.settings.resolved_database_url)
    try:
        with other.write() as session:
            session.execute(update(ParticipantSession).values(revoked_at=dt.datetime.now(dt.UTC)))
    finally:
        other.dispose()
    clock.now += platform.settings.auth_cache_seconds * 0.25
    assert consent.client.get("/v1/participant/me", headers=headers).status_code == 200
    clock.now += platform.settings.auth_cache_seconds
    assert consent.client.get("/v1/participant/me", headers=headers).status_code == 401
