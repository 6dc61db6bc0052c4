"""Participant sign-in by invitation: a single-use link token, then a one-time code sent through
the notification outbox, then a participant session.

* ``hvi_<random>`` — the invitation token in the link (stored as a SHA-256 digest, single use);
* a six-digit code, sent to the participant's (or proxy's) e-mail, valid for
  ``participant_code_ttl_seconds``; five wrong codes burn the invitation;
* ``hvp_<session id>.<secret>`` — the participant session token (a Bearer token).

This is one identity provider (identity assurance "low"); an ID-porten/BankID OIDC provider would
end in the same :func:`open_session` with assurance "substantial" or "high".
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hvelv.audit.trail import AuditTrail
from hvelv.config import Settings
from hvelv.consent.enrolment import contact_of, proxy_contact
from hvelv.consent.models import Invitation, Participant, ParticipantSession, Proxy
from hvelv.consent.pseudonyms import ProjectSecrets, mask_email
from hvelv.crypto.keyring import Keyring
from hvelv.errors import Conflict, HvelvError, InvalidInput, TooManyRequests, Unauthenticated
from hvelv.notify import outbox
from hvelv.projects.models import Project
from hvelv.security.authorize import Principal, PrincipalKind
from hvelv.security.tokens import digest

INVITATION_PREFIX = "hvi_"
SESSION_PREFIX = "hvp_"
MAX_CODE_ATTEMPTS = 5
RESEND_SECONDS = 30  # at most one code per invitation in this many seconds
ASSURANCE = "low"


@dataclass(frozen=True)
class NewInvitation:
    invitation: Invitation
    token: str
    link: str
    emailed: bool


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _recipient(
    session: Session, secrets_: ProjectSecrets, participant: Participant, proxy_id: int | None
) -> tuple[str | None, str]:
    if proxy_id is not None:
        proxy = session.get(Proxy, proxy_id)
        assert proxy is not None
        return proxy_contact(secrets_, proxy).get("email"), proxy.language
    return contact_of(secrets_, participant).get("email"), participant.language


def invite(
    session: Session,
    trail: AuditTrail,
    settings: Settings,
    keyring: Keyring,
    secrets_: ProjectSecrets,
    project: Project,
    participant: Participant,
    proxy: Proxy | None,
) -> NewInvitation:
    token = INVITATION_PREFIX + secrets.token_urlsafe(32)
    expires = _now() + dt.timedelta(hours=settings.participant_invitation_ttl_hours)
    invitation = Invitation(
        project_id=project.pid,
        participant_id=participant.id,
        proxy_id=proxy.id if proxy else None,
        token_digest=digest(token),
        created_by=trail.actor,
        expires_at=expires,
        code_attempts=0,
    )
    session.add(invitation)
    session.flush()
    link = f"{settings.base_url}/portal/invitation?token={token}"
    email, language = _recipient(session, secrets_, participant, invitation.proxy_id)
    if email:
        outbox.enqueue(
            session,
            keyring,
            project_id=project.pid,
            kind="invitation",
            language=language,
            to=email,
            params={"project": project.name, "link": link, "expires": expires.date().isoformat()},
        )
    trail.record(
        "consent.invite",
        target=f"participant:{participant.pseudonym}",
        project_id=project.pid,
        details={"invitation": invitation.id, "proxy": invitation.proxy_id, "emailed": bool(email)},
    )
    return NewInvitation(invitation, token, link, bool(email))


def _invitation(session: Session, token: str) -> Invitation:
    if not token.startswith(INVITATION_PREFIX) or len(token) > 200:
        raise Unauthenticated("invalid invitation", code="invalid_invitation")
    invitation = session.execute(
        select(Invitation).where(Invitation.token_digest == digest(token))
    ).scalar_one_or_none()
    if invitation is None or invitation.used_at is not None or invitation.expires_at <= _now():
        raise Unauthenticated(
            "the invitation is unknown, used or expired", code="invalid_invitation"
        )
    return invitation


def pending_invitation(session: Session, token: str) -> Invitation:
    """The invitation of a link token that can still be used, or :class:`Unauthenticated`."""
    return _invitation(session, token)


def _code_digest(invitation: Invitation, code: str) -> bytes:
    return digest(f"{invitation.id}:{code}")


@dataclass(frozen=True)
class CodeSent:
    sent_to: str
    expires_at: dt.datetime


def send_code(
    session: Session, trail: AuditTrail, settings: Settings, keyring: Keyring, token: str
) -> CodeSent:
    invitation = _invitation(session, token)
    participant = session.get(Participant, invitation.participant_id)
    project = session.get(Project, invitation.project_id)
    assert participant is not None
    assert project is not None
    secrets_ = ProjectSecrets(session, keyring, project.pid)
    email, language = _recipient(session, secrets_, participant, invitation.proxy_id)
    if not email:
        raise Conflict(
            "no e-mail address is known for this invitation; ask the project",
            code="no_contact_channel",
        )
    ttl = dt.timedelta(seconds=settings.participant_code_ttl_seconds)
    if invitation.code_expires_at is not None:
        wait = invitation.code_expires_at - ttl + dt.timedelta(seconds=RESEND_SECONDS) - _now()
        if wait > dt.timedelta(0):
            raise TooManyRequests(
                "a code was sent a moment ago; wait before asking for another",
                code="code_recently_sent",
                headers={"Retry-After": str(int(wait.total_seconds()) + 1)},
            )
    code = f"{secrets.randbelow(1_000_000):06d}"
    invitation.code_digest = _code_digest(invitation, code)
    invitation.code_expires_at = _now() + ttl
    outbox.enqueue(
        session,
        keyring,
        project_id=project.pid,
        kind="login_code",
        language=language,
        to=email,
        params={"code": code, "minutes": settings.participant_code_ttl_seconds // 60},
    )
    trail.record(
        "participant.code_sent",
        target=f"participant:{participant.pseudonym}",
        project_id=project.pid,
        details={"invitation": invitation.id},
    )
    return CodeSent(mask_email(email), invitation.code_expires_at)


class CodeRejected(Exception):
    """A wrong or expired code; the attempt is counted in the session, which must commit."""

    def __init__(self, error: HvelvError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class OpenedSession:
    token: str
    expires_at: dt.datetime
    participant: Participant


def verify_code(
    session: Session, trail: AuditTrail, settings: Settings, token: str, code: str
) -> OpenedSession:
    invitation = _invitation(session, token)
    if invitation.code_digest is None or invitation.code_expires_at is None:
        raise InvalidInput("ask for a code first", code="code_not_requested")
    participant = session.get(Participant, invitation.participant_id)
    assert participant is not None
    target = f"participant:{participant.pseudonym}"
    if invitation.code_expires_at <= _now():
        raise Unauthenticated("the code has expired; ask for a new one", code="code_expired")
    if not hmac.compare_digest(bytes(invitation.code_digest), _code_digest(invitation, code)):
        invitation.code_attempts += 1
        burned = invitation.code_attempts >= MAX_CODE_ATTEMPTS
        if burned:
            invitation.used_at = _now()
        trail.record(
            "participant.login",
            target=target,
            project_id=invitation.project_id,
            outcome="denied",
            details={"reason": "wrong_code", "invitation_burned": burned},
        )
        raise CodeRejected(Unauthenticated("the code is not right", code="wrong_code"))
    invitation.used_at = _now()
    opened = open_session(session, settings, participant, invitation.proxy_id, assurance=ASSURANCE)
    trail.record(
        "participant.login",
        target=target,
        project_id=invitation.project_id,
        details={"invitation": invitation.id, "proxy": invitation.proxy_id},
    )
    return opened


def open_session(
    session: Session,
    settings: Settings,
    participant: Participant,
    proxy_id: int | None,
    *,
    assurance: str,
) -> OpenedSession:
    sid = secrets.token_hex(16)
    secret = secrets.token_urlsafe(32)
    expires = _now() + dt.timedelta(seconds=settings.participant_session_ttl_seconds)
    session.add(
        ParticipantSession(
            id=sid,
            project_id=participant.project_id,
            participant_id=participant.id,
            proxy_id=proxy_id,
            secret_digest=digest(secret),
            assurance=assurance,
            expires_at=expires,
        )
    )
    session.flush()
    return OpenedSession(f"{SESSION_PREFIX}{sid}.{secret}", expires, participant)


def actor_name(pseudonym: str, proxy_id: int | None) -> str:
    return pseudonym if proxy_id is None else f"{pseudonym}/proxy-{proxy_id}"


def authenticate(session: Session, token: str, keep: list[Any] | None = None) -> Principal:
    """The principal of a participant session token, or :class:`Unauthenticated`."""
    body = token[len(SESSION_PREFIX) :]
    sid, _, secret = body.partition(".")
    if len(sid) != 32 or not secret or len(token) > 200:
        raise Unauthenticated("invalid participant session", code="invalid_token")
    # one query; the participant lands in the session's identity map for the route handler
    row = session.execute(
        select(ParticipantSession, Participant)
        .join(Participant, Participant.id == ParticipantSession.participant_id)
        .where(ParticipantSession.id == sid)
    ).first()
    if row is None or not hmac.compare_digest(bytes(row[0].secret_digest), digest(secret)):
        raise Unauthenticated("invalid participant session", code="invalid_token")
    ps: ParticipantSession = row[0]
    if keep is not None:  # the session's identity map holds objects weakly: keep them for the route
        keep.extend((ps, row[1]))
    if ps.revoked_at is not None or ps.expires_at <= _now():
        raise Unauthenticated("the session has ended; sign in again", code="session_ended")
    if ps.proxy_id is not None:
        proxy = session.get(Proxy, ps.proxy_id)
        if proxy is None or proxy.ended_at is not None:
            # a former guardian no longer sees the participant's consent
            raise Unauthenticated("the representation has ended", code="session_ended")
    return Principal(
        kind=PrincipalKind.PARTICIPANT,
        id=ps.participant_id,
        name=actor_name(row[1].pseudonym, ps.proxy_id),
        scope_project=ps.project_id,
        session_id=ps.id,
        acting_for=ps.proxy_id,
    )


def session_assurance(session: Session, session_id: str) -> str:
    row = session.get(ParticipantSession, session_id)
    return row.assurance if row is not None else "none"


def end_session(session: Session, session_id: str) -> None:
    row = session.get(ParticipantSession, session_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = _now()
