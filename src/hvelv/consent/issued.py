"""Signed receipts for stored consent ledger events, rebuilt on request (nothing is stored).

A receipt is a deterministic rendering of one ledger row: every input is fixed once the row is
committed, so the same event gives the same bytes every time it is asked for —

* the event itself (kind, time, actor kind, choices, scope, template version, text hash) and its
  place in the hash chain (``seq`` and ``hash``), from the append-only ledger row;
* the template version it names (immutable once published) and its study's name;
* the participant's per-project pseudonym (stable across key rotation), never the national id;
* the controller: the project's name and the platform's contact address (``HVELV_SMTP_FROM``);
* ``issuedAt`` = the event's ledger time, ``consentReceiptID`` = a UUIDv5 of the project, ``seq``
  and chain hash; ``language`` = the language of the text shown (else the participant's);
* Ed25519 signatures are deterministic (RFC 8032), over the canonical JSON.

What would change the bytes of a re-issued receipt: renaming the project or its study, changing
``HVELV_SMTP_FROM``, or a new platform signing key. An earlier copy still verifies with the key
it names.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from hvelv.config import Settings
from hvelv.consent.mapping import event_from_row, template_from_row
from hvelv.consent.models import ConsentEventRow, Participant, Study, TemplateVersion
from hvelv.consent.receipts import Controller, build_receipt, sign_receipt
from hvelv.crypto.keyring import Keyring
from hvelv.errors import NotFound
from hvelv.projects.models import Project

__all__ = ["COLLECTION_METHODS", "RECEIPT_NAMESPACE", "event_id", "issue_receipt", "receipt_row"]

# a fixed namespace: receipt ids are uuid5(namespace, "<pid>:<seq>:<chain hash>")
RECEIPT_NAMESPACE: Final = uuid.UUID("6f1d2a4e-6b0c-5d8e-9a47-1c3e5f7a9b20")
COLLECTION_METHODS: Final = {
    "web": "web portal",
    "paper": "paper form",
    "phone": "telephone",
    "import": "FHIR import",
    "system": "system event",
}


def event_id(pid: str, seq: int) -> str:
    """The receipt's event id: project and ledger position (``p1001:17``)."""
    return f"{pid}:{seq}"


def receipt_row(session: Session, participant: Participant, seq: int) -> ConsentEventRow:
    """The participant's ledger row at ``seq``; 404 when it is someone else's or missing."""
    row = session.get(ConsentEventRow, (participant.project_id, seq))
    if row is None or row.participant_id != participant.id:
        raise NotFound(f"no consent event {seq} for this participant", code="event_not_found")
    return row


def issue_receipt(
    session: Session,
    settings: Settings,
    keyring: Keyring,
    participant: Participant,
    row: ConsentEventRow,
) -> dict[str, Any]:
    """The signed receipt of ``row`` (see the module doc: the same bytes on every call)."""
    project = session.get(Project, row.project_id)
    assert project is not None
    version: TemplateVersion | None = None
    study: str | None = None
    if row.template_version_id is not None:
        key, _, number = row.template_version_id.rpartition(".")
        version = session.execute(
            select(TemplateVersion).where(
                TemplateVersion.project_id == row.project_id,
                TemplateVersion.template_key == key,
                TemplateVersion.version == int(number),
            )
        ).scalar_one()
        study_row = session.get(Study, version.study_id)
        study = study_row.name if study_row is not None else None
    digest = bytes(row.hash).hex()
    receipt = build_receipt(
        event=event_from_row(row, participant.pseudonym),
        event_id=event_id(row.project_id, row.seq),
        subject_pseudonym=participant.pseudonym,
        controller=Controller(name=project.name, contact=settings.smtp_from),
        ledger_position=row.seq,
        ledger_hash=digest,
        issued_at=row.at,
        template=template_from_row(version) if version is not None else None,
        language=row.language or participant.language,
        collection_method=COLLECTION_METHODS.get(row.channel, row.channel),
        study=study,
        receipt_id=str(uuid.uuid5(RECEIPT_NAMESPACE, f"{row.project_id}:{row.seq}:{digest}")),
    )
    return sign_receipt(receipt, keyring.signing_key)
