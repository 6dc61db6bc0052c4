"""Consent tables: participants, proxies, studies, template versions, the consent ledger,
deletion tasks, re-consent requests, the decision log, participant invitations and sessions,
and the notification outbox.

The consent ledger (``consent_events``) is append-only: rows are inserted, never updated or
deleted. ``seq`` is dense per project and each row's ``hash`` is
``SHA-256(prev_hash || body)`` over the canonical JSON ``body`` (as in the audit ledger).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hvelv.db.base import Base, UTCDateTime, utcnow

_PROJECT_FK = "projects.pid"


class Participant(Base):
    """A person enrolled in a project. The national id and contact channels are sealed
    (AES-GCM, key derived from the project key); ``lookup_hash`` finds a person by national id
    and ``pseudonym`` links their data in later issues."""

    __tablename__ = "consent_participants"
    __table_args__ = (
        # column order names them (uq_<table>_<first column>): lookup_hash, pseudonym
        UniqueConstraint("lookup_hash", "project_id"),
        UniqueConstraint("pseudonym", "project_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey(_PROJECT_FK, ondelete="CASCADE"), index=True)
    pseudonym: Mapped[str] = mapped_column(String(64))
    lookup_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    key_version: Mapped[int] = mapped_column(Integer)
    identity_sealed: Mapped[bytes] = mapped_column(LargeBinary)  # {"nid", "email", "phone"}
    id_kind: Mapped[str] = mapped_column(String(16))
    birth_date: Mapped[date] = mapped_column(Date)
    language: Mapped[str] = mapped_column(String(2))
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enrolled_by: Mapped[str] = mapped_column(String(200))


class Proxy(Base):
    """A representative (guardian) of a participant; ``ended_at`` when representation ends."""

    __tablename__ = "consent_proxies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey(_PROJECT_FK, ondelete="CASCADE"), index=True)
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("consent_participants.id", ondelete="CASCADE"), index=True
    )
    relation: Mapped[str] = mapped_column(String(32))
    key_version: Mapped[int] = mapped_column(Integer)
    contact_sealed: Mapped[bytes] = mapped_column(LargeBinary)  # {"name", "email", "phone"}
    language: Mapped[str] = mapped_column(String(2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Study(Base):
    __tablename__ = "consent_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey(_PROJECT_FK, ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))


class TemplateVersion(Base):
    """One version of a consent template; immutable once ``status == "published"``."""

    __tablename__ = "consent_templates"
    __table_args__ = (UniqueConstraint("project_id", "template_key", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey(_PROJECT_FK, ondelete="CASCADE"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("consent_studies.id", ondelete="CASCADE"))
    template_key: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    title: Mapped[str] = mapped_column(String(200))
    texts: Mapped[dict[str, str]] = mapped_column(JSON)
    text_hashes: Mapped[dict[str, str]] = mapped_column(JSON)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def version_id(self) -> str:
        return f"{self.template_key}.{self.version}"


class ConsentEventRow(Base):
    """One append-only consent ledger event (never updated in place)."""

    __tablename__ = "consent_events"

    project_id: Mapped[str] = mapped_column(
        ForeignKey(_PROJECT_FK, ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("consent_participants.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    assurance: Mapped[str] = mapped_column(String(16))
    template_version_id: Mapped[str | None] = mapped_column(String(48))
    text_hash: Mapped[str | None] = mapped_column(String(80))
    language: Mapped[str | None] = mapped_column(String(2))
    choices: Mapped[dict[str, bool]] = mapped_column(JSON)
    scope: Mapped[str | None] = mapped_column(String(16))
    recorded_by: Mapped[str] = mapped_column(String(200))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class DeletionTask(Base):
    """Data deletion / sample destruction owed after a withdrawal (deadline 30 days)."""

    __tablename__ = "consent_deletion_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey(_PROJECT_FK, ondelete="CASCADE"), index=True)
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("consent_participants.id", ondelete="CASCADE")
    )
    event_seq: Mapped[int] = mapped_column(BigInteger)
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_by: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str] = mapped_column(Text, default="")


class ReconsentRequest(Base):
    """A request to a participant to consent to a (new) template version; no answer = no."""

    __tablename__ = "consent_reconsent_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey(_PROJECT_FK, ondelete="CASCADE"), index=True)
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("consent_participants.id", ondelete="CASCADE"), index=True
    )
    template_id: Mapped[int] = mapped_column(ForeignKey("consent_templates.id"))
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answer: Mapped[str | None] = mapped_column(String(16))
    event_seq: Mapped[int | None] = mapped_column(BigInteger)


class DecisionLogEntry(Base):
    """A decision or snapshot that may release data: enough to recompute it from the ledger."""

    __tablename__ = "consent_decision_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey(_PROJECT_FK, ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # decision | snapshot
    participant_id: Mapped[int | None] = mapped_column(
        ForeignKey("consent_participants.id", ondelete="CASCADE"), index=True
    )
    use: Mapped[dict[str, Any]] = mapped_column(JSON)
    approval: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    ledger_position: Mapped[int] = mapped_column(BigInteger)
    permitted: Mapped[int] = mapped_column(Integer)  # 1/0 for a decision, a count for a snapshot
    requester: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Invitation(Base):
    """A single-use link token for a participant (or their proxy) to sign in."""

    __tablename__ = "consent_invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey(_PROJECT_FK, ondelete="CASCADE"), index=True)
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("consent_participants.id", ondelete="CASCADE")
    )
    proxy_id: Mapped[int | None] = mapped_column(
        ForeignKey("consent_proxies.id", ondelete="CASCADE")
    )
    token_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    code_digest: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    code_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    code_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ParticipantSession(Base):
    __tablename__ = "consent_participant_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey(_PROJECT_FK, ondelete="CASCADE"))
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("consent_participants.id", ondelete="CASCADE"), index=True
    )
    proxy_id: Mapped[int | None] = mapped_column(
        ForeignKey("consent_proxies.id", ondelete="CASCADE")
    )
    secret_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    assurance: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
