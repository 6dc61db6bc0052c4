"""The consent jobs on the server's schedule: the outbox is sent through a real local SMTP
server, and the coming-of-age review raises the re-consent request on the 16th birthday (the
scheduler's clock is injected, as the consent tests pass ``today``/``at``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import select

from hvelv.app import create_app
from hvelv.audit.trail import AuditTrail
from hvelv.consent import service
from hvelv.consent.model import ActorKind, EventKind
from hvelv.consent.models import ReconsentRequest
from hvelv.jobs import Scheduler, recorded_runs
from hvelv.notify.models import OutboxMessage
from hvelv.platform import Platform
from tests.consent.conftest import CHILD_BIRTH, Consent
from tests.consent.test_participant_access import Mailbox, _free_port
from tests.test_jobs import wait_for


@pytest.fixture
def mail() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def _fast(consent: Consent, port: int, **intervals: float) -> Platform:
    """The same instance with SMTP configured and the given job intervals (others off)."""
    settings = consent.platform.settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_from": "hvelv@uio.example",
            "maintenance_interval_seconds": 0,
            "outbox_interval_seconds": 0,
            "consent_review_interval_seconds": 0,
            "jobs_start_delay_seconds": 0,
            **intervals,
        }
    )
    return Platform.build(settings, consent.platform.db, consent.platform.keyring)


def _unsent(consent: Consent) -> int:
    with consent.platform.db.read() as session:
        return len(
            session.execute(select(OutboxMessage.id).where(OutboxMessage.sent_at.is_(None))).all()
        )


def test_the_server_sends_the_outbox_on_schedule(
    consent: Consent, mail: tuple[Mailbox, int]
) -> None:
    mailbox, port = mail
    pseudonym = consent.enrol(language="en")
    invited = consent.client.post(
        f"{consent.base}/participants/{pseudonym}/invitations", json={}, headers=consent.dm
    )
    assert invited.status_code == 201, invited.text
    assert _unsent(consent) == 1
    fast = _fast(consent, port, outbox_interval_seconds=0.1)
    scheduler = Scheduler.for_platform(fast)
    with TestClient(create_app(fast, scheduler=scheduler)):
        wait_for(lambda: len(mailbox.messages) == 1, "the invitation at the SMTP server")
        wait_for(lambda: _unsent(consent) == 0, "the message marked sent")
    message = mailbox.messages[0]
    assert message["To"] == "kari@example.org"
    assert message["Subject"].startswith("Invitation")
    assert invited.json()["token"] in mailbox.last_body()
    assert scheduler.runs["outbox.send"] >= 1
    assert scheduler.runs["files.sweep"] == scheduler.runs["consent.proxy_review"] == 0


def test_an_unreachable_smtp_server_fails_the_run_and_the_next_run_retries(
    consent: Consent, mail: tuple[Mailbox, int]
) -> None:
    mailbox, port = mail
    pseudonym = consent.enrol()
    consent.client.post(
        f"{consent.base}/participants/{pseudonym}/invitations", json={}, headers=consent.dm
    )
    down = Scheduler.for_platform(_fast(consent, _free_port()))  # nobody listens there
    failed = down.run_once("outbox.send")
    assert (failed.outcome, failed.error) == ("failed", "ConnectionRefusedError")
    assert _unsent(consent) == 1
    up = Scheduler.for_platform(_fast(consent, port))
    assert up.run_once("outbox.send").result == {"sent": 1}
    assert len(mailbox.messages) == 1


def _proxied_child(consent: Consent) -> str:
    child = consent.enrol(CHILD_BIRTH)
    added = consent.client.post(
        f"{consent.base}/participants/{child}/proxies",
        json={"relation": "parent", "name": "Mor"},
        headers=consent.dm,
    )
    assert added.status_code == 201, added.text
    with consent.platform.db.write() as session:
        trail = AuditTrail(session, consent.platform.ledger, "local:test")
        participant = service.get_participant(session, consent.pid, child)
        (proxy,) = service.list_proxies(session, participant)
        service.record_event(
            session,
            trail,
            participant,
            kind=EventKind.PROXY_GIVEN,
            acting=service.Acting(ActorKind.PROXY, proxy),
            channel="paper",
            assurance="substantial",
            template=service.get_version_by_id(session, consent.pid, consent.version_id),
            choices={"hmb": True},
        )
    return child


def _requests(consent: Consent) -> list[ReconsentRequest]:
    with consent.platform.db.read() as session:
        return list(session.execute(select(ReconsentRequest)).scalars())


def test_the_scheduled_review_asks_for_consent_on_the_16th_birthday(
    consent: Consent, mail: tuple[Mailbox, int]
) -> None:
    mailbox, port = mail
    child = _proxied_child(consent)
    age = consent.platform.settings.consent_age_of_majority
    birthday = CHILD_BIRTH.replace(year=CHILD_BIRTH.year + age)
    morning = dt.datetime.combine(birthday, dt.time(6), tzinfo=dt.UTC)

    # the day before, the review finds nobody
    eve = Scheduler.for_platform(_fast(consent, port), clock=lambda: morning - dt.timedelta(days=1))
    before = eve.run_once("consent.proxy_review")
    assert (before.outcome, before.result["ended"], before.result["requests"]) == ("ok", 0, 0)
    assert _requests(consent) == []

    # on the birthday, the server's own schedule ends the representation, raises the request
    # and the outbox job e-mails it
    fast = _fast(consent, port, consent_review_interval_seconds=0.1, outbox_interval_seconds=0.1)
    scheduler = Scheduler.for_platform(fast, clock=lambda: morning)
    with TestClient(create_app(fast, scheduler=scheduler)):
        wait_for(lambda: len(_requests(consent)) == 1, "the re-consent request")
        wait_for(lambda: len(mailbox.messages) == 1, "the re-consent e-mail")
    (request,) = _requests(consent)
    assert request.reason == "coming_of_age"
    assert request.answered_at is None
    assert mailbox.messages[0]["To"] == "kari@example.org"
    assert "ber om ditt samtykke til «Main consent»" in mailbox.last_body()
    kinds = [
        e["kind"]
        for e in consent.client.get(
            f"{consent.base}/participants/{child}/events", headers=consent.dm
        ).json()
    ]
    assert kinds == ["proxy_given", "proxy_ended"]
    # the run that did the work is in the audit ledger; later runs found nothing more to do
    results = [
        r["result"] for r in recorded_runs(consent.platform.db, "consent.proxy_review", limit=10)
    ]
    assert {"projects": 2, "ended": 1, "requests": 1} in results
    assert scheduler.run_once("consent.proxy_review").result["ended"] == 0
    assert len(_requests(consent)) == 1
