"""Enrolling participants, one or many (CSV, all or nothing), and adding proxies.

A rejected enrolment lists every bad row with its line number and a reason code; national ids
appear in errors and audit events only masked (``*********88``) or as pseudonyms.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hvelv.audit.ledger import AuditRecord
from hvelv.audit.trail import AuditTrail
from hvelv.consent.models import Participant, Proxy
from hvelv.consent.national_id import InvalidNationalId, parse_national_id
from hvelv.consent.pseudonyms import ProjectSecrets, mask_national_id
from hvelv.consent.service import LANGUAGES
from hvelv.errors import InvalidInput

__all__ = [
    "CSV_COLUMNS",
    "EnrolRow",
    "add_proxy",
    "contact_of",
    "enrol",
    "find_by_national_id",
    "parse_csv",
]

CSV_COLUMNS = ("national_id", "email", "phone", "language")
MAX_ROWS = 100_000
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")
PHONE = re.compile(r"^\+?[0-9]{8,15}$")


@dataclass(frozen=True)
class EnrolRow:
    line: int
    national_id: str
    email: str | None = None
    phone: str | None = None
    language: str = "nb"


def parse_csv(text: str) -> list[EnrolRow]:
    """CSV with a header naming ``national_id`` and any of ``email, phone, language``."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        header = [h.strip() for h in reader.fieldnames or []]
    except csv.Error as exc:
        raise InvalidInput(
            f"the CSV header cannot be read: {exc}", code="invalid_csv", details={"line": 1}
        ) from None
    if "national_id" not in header or set(header) - set(CSV_COLUMNS):
        raise InvalidInput(
            "the CSV header must name national_id and only these columns: "
            + ", ".join(CSV_COLUMNS),
            code="invalid_csv",
            details={"unknown_columns": sorted(set(header) - set(CSV_COLUMNS))},
        )
    reader.fieldnames = header
    rows: list[EnrolRow] = []
    try:
        for record in reader:
            if len(rows) >= MAX_ROWS:
                raise InvalidInput(f"at most {MAX_ROWS} rows per import", code="too_many_rows")
            if None in record:  # more cells than columns
                raise InvalidInput(
                    f"line {reader.line_num} has more cells than the header",
                    code="invalid_csv",
                    details={"line": reader.line_num},
                )
            values = {k: (v or "").strip() for k, v in record.items()}
            if not any(values.values()):
                continue
            rows.append(
                EnrolRow(
                    line=reader.line_num,
                    national_id=values.get("national_id", ""),
                    email=values.get("email") or None,
                    phone=values.get("phone") or None,
                    language=values.get("language") or "nb",
                )
            )
    except csv.Error as exc:
        raise InvalidInput(
            f"the CSV cannot be read: {exc}", code="invalid_csv", details={"line": reader.line_num}
        ) from None
    if not rows:
        raise InvalidInput("the CSV has no rows", code="invalid_csv")
    return rows


def _problems(
    row: EnrolRow, allow_synthetic: bool, today: dt.date
) -> tuple[list[dict[str, Any]], Any]:
    problems: list[dict[str, Any]] = []
    parsed = None
    try:
        parsed = parse_national_id(row.national_id, allow_synthetic=allow_synthetic, today=today)
    except InvalidNationalId as exc:
        problems.append(
            {
                "line": row.line,
                "field": "national_id",
                "reason": exc.reason_code,
                "message": exc.message,
                "value": mask_national_id(row.national_id),
            }
        )
    if row.email is not None and not EMAIL.match(row.email):
        problems.append({"line": row.line, "field": "email", "reason": "invalid_email"})
    if row.phone is not None and not PHONE.match(row.phone.replace(" ", "")):
        problems.append({"line": row.line, "field": "phone", "reason": "invalid_phone"})
    if row.language not in LANGUAGES:
        problems.append({"line": row.line, "field": "language", "reason": "unknown_language"})
    return problems, parsed


def enrol(
    session: Session,
    trail: AuditTrail,
    secrets: ProjectSecrets,
    rows: list[EnrolRow],
    *,
    allow_synthetic: bool,
    today: dt.date | None = None,
) -> list[Participant]:
    """Enrol every row or none: any bad row rejects all with a row-level report (422)."""
    pid = secrets.pid
    day = today or dt.datetime.now(dt.UTC).date()
    problems: list[dict[str, Any]] = []
    accepted: list[tuple[EnrolRow, Any, bytes]] = []
    first_line: dict[bytes, int] = {}
    for row in rows:
        found, parsed = _problems(row, allow_synthetic, day)
        if parsed is not None:
            digest = secrets.lookup_hash(parsed.normalized)
            if digest in first_line:
                found.append(
                    {
                        "line": row.line,
                        "field": "national_id",
                        "reason": "duplicate_in_file",
                        "same_as_line": first_line[digest],
                        "value": mask_national_id(row.national_id),
                    }
                )
            else:
                first_line[digest] = row.line
            if not found:
                accepted.append((row, parsed, digest))
        problems.extend(found)
    if accepted:
        existing = set(
            session.execute(
                select(Participant.lookup_hash).where(
                    Participant.project_id == pid,
                    Participant.lookup_hash.in_([d for _, _, d in accepted]),
                )
            ).scalars()
        )
        for row, _, digest in accepted:
            if bytes(digest) in {bytes(e) for e in existing}:
                problems.append(
                    {
                        "line": row.line,
                        "field": "national_id",
                        "reason": "already_enrolled",
                        "value": mask_national_id(row.national_id),
                    }
                )
    if problems:
        problems.sort(key=lambda p: (p["line"], p["field"]))
        raise InvalidInput(
            f"{len({p['line'] for p in problems})} of {len(rows)} rows are not valid; "
            "nobody was enrolled",
            code="enrolment_rejected",
            details={"rows": problems},
        )
    made: list[Participant] = []
    for row, parsed, digest in accepted:
        name = secrets.pseudonym(parsed.normalized)
        made.append(
            Participant(
                project_id=pid,
                pseudonym=name,
                lookup_hash=digest,
                key_version=secrets.version,
                identity_sealed=secrets.seal(
                    "identity",
                    name,
                    {"nid": parsed.normalized, "email": row.email, "phone": row.phone},
                ),
                id_kind=parsed.kind.value,
                birth_date=parsed.birth_date,
                language=row.language,
                enrolled_by=trail.actor,
            )
        )
    session.add_all(made)
    session.flush()
    trail.ledger.append(
        session,
        [
            AuditRecord(
                action="consent.participant_enrol",
                actor=trail.actor,
                project_id=pid,
                target=f"participant:{p.pseudonym}",
                request_id=trail.request_id,
                client=trail.client,
                details={"id_kind": p.id_kind, "language": p.language, "bulk": len(made) > 1},
            )
            for p in made
        ],
    )
    return made


def contact_of(secrets: ProjectSecrets, participant: Participant) -> dict[str, Any]:
    """The sealed identity: ``nid``, ``email``, ``phone``."""
    return secrets.open(
        "identity", participant.pseudonym, participant.key_version, participant.identity_sealed
    )


def find_by_national_id(
    session: Session, secrets: ProjectSecrets, national_id: str
) -> Participant | None:
    return session.execute(
        select(Participant).where(
            Participant.project_id == secrets.pid,
            Participant.lookup_hash == secrets.lookup_hash(national_id),
        )
    ).scalar_one_or_none()


def add_proxy(
    session: Session,
    trail: AuditTrail,
    secrets: ProjectSecrets,
    participant: Participant,
    *,
    relation: str,
    name: str,
    email: str | None,
    phone: str | None,
    language: str,
) -> Proxy:
    if email is not None and not EMAIL.match(email):
        raise InvalidInput("the e-mail address is not valid", code="invalid_email")
    if phone is not None and not PHONE.match(phone.replace(" ", "")):
        raise InvalidInput("the phone number is not valid", code="invalid_phone")
    proxy = Proxy(
        project_id=participant.project_id,
        participant_id=participant.id,
        relation=relation,
        key_version=secrets.version,
        contact_sealed=b"",
        language=language,
    )
    session.add(proxy)
    session.flush()
    proxy.contact_sealed = secrets.seal(
        "proxy", str(proxy.id), {"name": name, "email": email, "phone": phone}
    )
    session.flush()
    trail.record(
        "consent.proxy_add",
        target=f"participant:{participant.pseudonym}",
        project_id=participant.project_id,
        details={"proxy": proxy.id, "relation": relation},
    )
    return proxy


def proxy_contact(secrets: ProjectSecrets, proxy: Proxy) -> dict[str, Any]:
    return secrets.open("proxy", str(proxy.id), proxy.key_version, proxy.contact_sealed)
