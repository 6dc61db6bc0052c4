"""Participant sign-in by invitation and one-time code, delivered through the outbox to a real
local SMTP server (aiosmtpd), and the participant principal's boundaries."""

from __future__ import annotations

import email
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from typer.testing import CliRunner

from hvelv.cli.main import app
from hvelv.config import Settings
from hvelv.notify import outbox
from hvelv.notify.models import OutboxMessage
from tests.consent.conftest import CHILD_BIRTH, Consent


@dataclass
class Mailbox:
    messages: list[Message] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("bounce@"):
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted"

    def last_body(self) -> str:
        payload = self.messages[-1].get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def _settings(consent: Consent, port: int) -> Settings:
    return consent.platform.settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_from": "hvelv@uio.example"}
    )


def _send(consent: Consent, port: int) -> int:
    return outbox.send_pending(
        consent.platform.db, _settings(consent, port), consent.platform.keyring
    )


def test_invitation_code_and_session_through_a_real_smtp_server(
    consent: Consent, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    pseudonym = consent.enrol()
    invited = consent.client.post(
        f"{consent.base}/participants/{pseudonym}/invitations", json={}, headers=consent.dm
    )
    assert invited.status_code == 201, invited.text
    token = invited.json()["token"]
    assert invited.json()["emailed"] is True
    assert _send(consent, port) == 1
    invitation_mail = mailbox.messages[-1]
    assert invitation_mail["To"] == "kari@example.org"
    assert invitation_mail["From"] == "hvelv@uio.example"
    assert invitation_mail["Subject"].startswith("Invitasjon")
    assert token in mailbox.last_body()

    started = consent.client.post("/v1/participant/login", json={"invitation": token})
    assert started.status_code == 202, started.text
    assert started.json()["sent_to"] == "k***@example.org"
    again = consent.client.post("/v1/participant/login", json={"invitation": token})
    assert again.status_code == 429
    assert again.json()["error"]["code"] == "code_recently_sent"
    assert int(again.headers["retry-after"]) <= 30
    # the code waits sealed in the outbox until the sender runs
    with consent.platform.db.read() as session:
        pending = session.execute(
            select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
        ).scalar_one()
        assert b"kari@example.org" not in pending.sealed
    assert _send(consent, port) == 1
    assert _send(consent, port) == 0
    match = re.search(r"\b(\d{6})\b", mailbox.last_body())
    assert match is not None
    code = match.group(1)
    wrong = "000000" if code != "000000" else "111111"
    refused = consent.client.post(
        "/v1/participant/login/verify", json={"invitation": token, "code": wrong}
    )
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "wrong_code"
    verified = consent.client.post(
        "/v1/participant/login/verify", json={"invitation": token, "code": code}
    )
    assert verified.status_code == 200, verified.text
    session_token = verified.json()["access_token"]
    assert session_token.startswith("hvp_")
    me = {"Authorization": f"Bearer {session_token}"}
    assert consent.client.get("/v1/participant/me", headers=me).json()["acting_as"] == "participant"
    given = consent.give(me, hmb=True)
    assert given.status_code == 201
    assert given.json()["assurance"] == "low"
    assert given.json()["channel"] == "web"

    # single use: the invitation is spent
    reused = consent.client.post("/v1/participant/login", json={"invitation": token})
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "invalid_invitation"
    assert consent.client.post("/v1/participant/logout", headers=me).status_code == 204
    ended = consent.client.get("/v1/participant/me", headers=me)
    assert ended.status_code == 401
    assert ended.json()["error"]["code"] == "session_ended"


def test_messages_in_english_and_five_wrong_codes_burn_the_invitation(
    consent: Consent, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    pseudonym = consent.enrol(language="en", email="ola@example.org")
    token = consent.client.post(
        f"{consent.base}/participants/{pseudonym}/invitations", json={}, headers=consent.dm
    ).json()["token"]
    consent.client.post("/v1/participant/login", json={"invitation": token})
    assert _send(consent, port) == 2
    assert [m["Subject"].split(":")[0] for m in mailbox.messages] == [
        "Invitation",
        "One-time code",
    ]
    assert "Your one-time code is" in mailbox.last_body()
    code = re.search(r"\b(\d{6})\b", mailbox.last_body())
    assert code is not None
    wrong = "000000" if code.group(1) != "000000" else "111111"
    for _ in range(5):
        response = consent.client.post(
            "/v1/participant/login/verify", json={"invitation": token, "code": wrong}
        )
        assert response.status_code == 401
    burned = consent.client.post(
        "/v1/participant/login/verify", json={"invitation": token, "code": code.group(1)}
    )
    assert burned.status_code == 401
    assert burned.json()["error"]["code"] == "invalid_invitation"


def test_failed_deliveries_are_counted_and_retried(
    consent: Consent, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    pseudonym = consent.enrol(email="bounce@example.org")
    consent.client.post(
        f"{consent.base}/participants/{pseudonym}/invitations", json={}, headers=consent.dm
    )
    for attempt in range(1, outbox.MAX_ATTEMPTS + 1):
        assert _send(consent, port) == 0
        with consent.platform.db.read() as session:
            message = session.execute(select(OutboxMessage)).scalar_one()
            assert message.attempts == attempt
            assert message.last_error == "SMTPRecipientsRefused"
    assert message.failed is True
    assert mailbox.messages == []
    # no SMTP host configured: nothing is sent and nothing fails
    assert (
        outbox.send_pending(
            consent.platform.db, consent.platform.settings, consent.platform.keyring
        )
        == 0
    )


def test_participants_without_email_cannot_get_a_code(consent: Consent) -> None:
    pseudonym = consent.enrol(email=None)
    invited = consent.client.post(
        f"{consent.base}/participants/{pseudonym}/invitations", json={}, headers=consent.dm
    ).json()
    assert invited["emailed"] is False
    started = consent.client.post("/v1/participant/login", json={"invitation": invited["token"]})
    assert started.status_code == 409
    assert started.json()["error"]["code"] == "no_contact_channel"
    unknown = consent.client.post("/v1/participant/login", json={"invitation": "hvi_nonsense"})
    assert unknown.status_code == 401


def test_participants_and_users_stay_on_their_own_routes(consent: Consent) -> None:
    pseudonym = consent.enrol()
    me = consent.participant(pseudonym)
    for method, path in (
        ("GET", f"{consent.base}/studies"),
        ("POST", f"{consent.base}/snapshots"),
        ("GET", f"/v1/projects/{consent.pid}"),
        ("GET", "/v1/me"),
        ("GET", "/v1/users"),
    ):
        response = consent.client.request(method, path, headers=me, json={})
        assert response.status_code == 403, (path, response.text)
    for who in ("owner", "member", "operator"):
        response = consent.client.get(
            "/v1/participant/consents", headers=consent.people[who].headers
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "participants_only"
    # a participant's refusal is audited with the participant as actor
    events = consent.client.get(
        f"/v1/projects/{consent.pid}/audit",
        params={"outcome": "denied"},
        headers=consent.people["owner"].headers,
    ).json()["items"]
    assert any(e["actor"] == f"participant:{pseudonym}" for e in events)


def test_the_cli_sends_the_outbox(
    consent: Consent, smtp: tuple[Mailbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox, port = smtp
    pseudonym = consent.enrol(language="en")
    consent.client.post(
        f"{consent.base}/participants/{pseudonym}/invitations", json={}, headers=consent.dm
    )
    settings = consent.platform.settings
    monkeypatch.setenv("HVELV_DATABASE_URL", settings.resolved_database_url)
    runner = CliRunner()
    missing = runner.invoke(app, ["outbox", "send", "--home", str(settings.home)])
    assert missing.exit_code == 2
    assert "HVELV_SMTP_HOST" in missing.output
    monkeypatch.setenv("HVELV_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("HVELV_SMTP_PORT", str(port))
    result = runner.invoke(app, ["outbox", "send", "--home", str(settings.home), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"sent": 1}
    assert mailbox.messages[-1]["Subject"].startswith("Invitation")
    consent.client.post(
        f"{consent.base}/participants/{pseudonym}/invitations", json={}, headers=consent.dm
    )
    monkeypatch.setenv("HVELV_SMTP_PORT", str(_free_port()))  # nobody listens there
    down = runner.invoke(app, ["outbox", "send", "--home", str(settings.home)])
    assert down.exit_code == 1
    assert "unreachable" in down.output


def test_a_guardian_signs_in_from_a_proxy_invitation(
    consent: Consent, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    child = consent.enrol(CHILD_BIRTH, email=None)
    proxy = consent.client.post(
        f"{consent.base}/participants/{child}/proxies",
        json={
            "relation": "guardian",
            "name": "Verge",
            "email": "verge@example.org",
            "language": "en",
        },
        headers=consent.dm,
    ).json()
    invited = consent.client.post(
        f"{consent.base}/participants/{child}/invitations",
        json={"proxy_id": proxy["id"]},
        headers=consent.dm,
    ).json()
    assert invited["emailed"] is True
    consent.client.post("/v1/participant/login", json={"invitation": invited["token"]})
    assert _send(consent, port) == 2
    assert {m["To"] for m in mailbox.messages} == {"verge@example.org"}
    code = re.search(r"\b(\d{6})\b", mailbox.last_body())
    assert code is not None
    token = consent.client.post(
        "/v1/participant/login/verify",
        json={"invitation": invited["token"], "code": code.group(1)},
    ).json()["access_token"]
    guardian = {"Authorization": f"Bearer {token}"}
    assert consent.client.get("/v1/participant/me", headers=guardian).json()["acting_as"] == "proxy"
    given = consent.give(guardian, hmb=True)
    assert given.json()["kind"] == "proxy_given"
    assert given.json()["actor_id"] == f"proxy-{proxy['id']}"
    # once the representation has ended, new invitations for that proxy are refused
    consent.client.post(
        f"{consent.base}/participants/{child}/proxies/{proxy['id']}/end", headers=consent.dm
    )
    refused = consent.client.post(
        f"{consent.base}/participants/{child}/invitations",
        json={"proxy_id": proxy["id"]},
        headers=consent.dm,
    )
    assert refused.status_code == 409
    # and the former guardian's session no longer opens the participant's consent
    gone = consent.client.get("/v1/participant/consents", headers=guardian)
    assert gone.status_code == 401
    assert gone.json()["error"]["code"] == "session_ended"
