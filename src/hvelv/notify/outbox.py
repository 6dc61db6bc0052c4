"""The notification outbox and its SMTP sender.

Messages are written to ``notification_outbox`` in the same transaction as the change that
causes them (an invitation, a one-time code, a re-consent request), sealed with a key derived
from the master key because they hold addresses and codes. :func:`send_pending` delivers them
with :mod:`smtplib` and marks each one sent (or counts the failed attempt); it is safe to run from
several processes because each message is claimed in its own write transaction.

Messages exist in Norwegian (bokmål; nynorsk readers get bokmål until translated) and English.
"""

from __future__ import annotations

import datetime as dt
import json
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hvelv.config import Settings
from hvelv.crypto.envelope import open_sealed, seal
from hvelv.crypto.keyring import Keyring
from hvelv.db.engine import Database
from hvelv.notify.models import OutboxMessage

__all__ = ["MESSAGES", "enqueue", "read", "render", "send_pending"]

MAX_ATTEMPTS = 5

MESSAGES: dict[tuple[str, str], tuple[str, str]] = {
    ("invitation", "nb"): (
        "Invitasjon: ditt samtykke i {project}",
        "Hei!\n\nDu er invitert til å se og styre samtykket ditt i prosjektet {project}.\n"
        "Åpne lenken for å logge inn:\n\n{link}\n\nLenken kan brukes én gang og gjelder til "
        "{expires}.\n",
    ),
    ("invitation", "en"): (
        "Invitation: your consent in {project}",
        "Hello,\n\nYou are invited to view and manage your consent in the project {project}.\n"
        "Open the link to sign in:\n\n{link}\n\nThe link works once and until {expires}.\n",
    ),
    ("login_code", "nb"): (
        "Engangskode: {code}",
        "Engangskoden din er {code}.\n\nDen gjelder i {minutes} minutter. Har du ikke bedt om "
        "den, kan du se bort fra denne e-posten.\n",
    ),
    ("login_code", "en"): (
        "One-time code: {code}",
        "Your one-time code is {code}.\n\nIt works for {minutes} minutes. If you did not ask "
        "for it, ignore this e-mail.\n",
    ),
    ("reconsent", "nb"): (
        "Nytt samtykke ønskes i {project}",
        "Hei!\n\nProsjektet {project} ber om ditt samtykke til «{title}». Uten svar regnes det "
        "som nei. Logg inn for å svare.\n",
    ),
    ("reconsent", "en"): (
        "Your consent is requested in {project}",
        "Hello,\n\nThe project {project} asks for your consent to “{title}”. No answer counts "
        "as no. Sign in to answer.\n",
    ),
}


def _key(keyring: Keyring) -> bytes:
    return keyring.derived("notification-outbox")


def _aad(message_id: int) -> bytes:
    return f"hvelv:outbox:{message_id}".encode()


def render(kind: str, language: str, params: dict[str, Any]) -> tuple[str, str]:
    lang = "en" if language == "en" else "nb"
    subject, body = MESSAGES[(kind, lang)]
    return subject.format(**params), body.format(**params)


def enqueue(
    session: Session,
    keyring: Keyring,
    *,
    project_id: str | None,
    kind: str,
    language: str,
    to: str,
    params: dict[str, Any],
) -> OutboxMessage:
    subject, body = render(kind, language, params)
    message = OutboxMessage(
        project_id=project_id, channel="email", kind=kind, language=language, sealed=b""
    )
    session.add(message)
    session.flush()
    payload = json.dumps({"to": to, "subject": subject, "body": body}).encode()
    message.sealed = seal(_key(keyring), payload, _aad(message.id))
    session.flush()
    return message


@dataclass(frozen=True)
class Opened:
    id: int
    kind: str
    to: str
    subject: str
    body: str


def read(keyring: Keyring, message: OutboxMessage) -> Opened:
    data = json.loads(open_sealed(_key(keyring), message.sealed, _aad(message.id)))
    return Opened(message.id, message.kind, data["to"], data["subject"], data["body"])


def _email(settings: Settings, opened: Opened) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = settings.smtp_from
    mail["To"] = opened.to
    mail["Subject"] = opened.subject
    mail["Message-ID"] = f"<hvelv-outbox-{opened.id}@{settings.smtp_from.split('@')[-1]}>"
    mail.set_content(opened.body)
    return mail


def send_pending(db: Database, settings: Settings, keyring: Keyring, *, limit: int = 100) -> int:
    """Send up to ``limit`` waiting messages over SMTP; returns how many were sent."""
    if settings.smtp_host is None:
        return 0
    with db.read() as session:
        ids = list(
            session.execute(
                select(OutboxMessage.id)
                .where(OutboxMessage.sent_at.is_(None), OutboxMessage.failed.is_(False))
                .order_by(OutboxMessage.id)
                .limit(limit)
            ).scalars()
        )
    if not ids:
        return 0
    sent = 0
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username and settings.smtp_password:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        for message_id in ids:
            with db.write() as session:
                message = session.get(OutboxMessage, message_id)
                if message is None or message.sent_at is not None or message.failed:
                    continue  # another sender took it
                try:
                    smtp.send_message(_email(settings, read(keyring, message)))
                except smtplib.SMTPException as exc:
                    message.attempts += 1
                    message.last_error = type(exc).__name__
                    message.failed = message.attempts >= MAX_ATTEMPTS
                    continue
                message.attempts += 1
                message.sent_at = dt.datetime.now(dt.UTC)
                sent += 1
    return sent
