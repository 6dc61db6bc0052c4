"""FHIR Consent export and import for stored participants (the pure mapping is
:mod:`hvelv.consent.fhir`).

Export: one ``Consent`` per template a participant's ledger names, folded as the engine folds
it at the export time, validated with ``fhir.resources`` before it leaves.

Import: each document is validated and mapped by :func:`hvelv.consent.fhir.from_fhir`; its
template is resolved to a *published* version of the importing project — the version it names
when that version has the document's text hash, otherwise a version with the same text hash whose
items equal the document's (so a document exported from another project imports when that
project published the same template). The events then go through
:func:`hvelv.consent.service.record_event` with ``channel="import"``: the engine refuses what it
would ignore. A document is imported whole or not at all (the caller commits once).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from hvelv.audit.trail import AuditTrail
from hvelv.consent import service
from hvelv.consent.fhir import (
    FhirConsentError,
    ImportedConsent,
    InvalidFhirConsent,
    from_fhir,
    to_fhir_r4,
    to_fhir_r5,
    validate_fhir,
)
from hvelv.consent.mapping import event_from_row, provision_from_dict
from hvelv.consent.model import ActorKind, ConsentEvent, EventKind, Template
from hvelv.consent.models import ConsentEventRow, Participant, TemplateVersion
from hvelv.errors import Conflict, InvalidInput, NotFound
from hvelv.projects.models import Project

__all__ = ["FhirVersion", "export_participant", "import_documents", "split_documents"]

FhirVersion = Literal["R5", "R4"]
_CLOCK_SKEW = dt.timedelta(minutes=5)


def _latest(templates: Mapping[str, Template]) -> dict[str, Template]:
    """template id → its highest published version."""
    best: dict[str, tuple[int, Template]] = {}
    for version_id, template in templates.items():
        number = int(version_id.rpartition(".")[2])
        if template.template_id not in best or number > best[template.template_id][0]:
            best[template.template_id] = (number, template)
    return {key: t for key, (_, t) in best.items()}


def export_participant(
    project: Project,
    participant: Participant,
    rows: Sequence[ConsentEventRow],
    templates: Mapping[str, Template],
    at: dt.datetime,
    version: FhirVersion,
    *,
    age_of_majority: int,
) -> list[dict[str, Any]]:
    """One validated FHIR Consent per template the participant's ledger names, as of ``at``."""
    events: list[ConsentEvent] = [event_from_row(r, participant.pseudonym) for r in rows]
    latest = _latest(templates)
    keys: list[str] = []
    for e in events:
        if e.template_version_id and e.template_version_id in templates:
            key = templates[e.template_version_id].template_id
            if key not in keys:
                keys.append(key)
    make = to_fhir_r5 if version == "R5" else to_fhir_r4
    docs = []
    for key in keys:
        doc = make(
            f"Patient/{participant.pseudonym}",
            latest[key],
            events,
            at,
            template_lookup=templates.get,
            participant_birth_date=participant.birth_date,
            age_of_majority=age_of_majority,
            controller_name=project.name,
            resource_id=f"{participant.pseudonym}-{key}",
        )
        validate_fhir(doc, version)
        docs.append(doc)
    return docs


def bundle(docs: Sequence[dict[str, Any]], at: dt.datetime) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "total": len(docs),
        "entry": [{"resource": d} for d in docs],
    }


def split_documents(body: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """A Consent, or a Bundle of Consents → ``[(where, document)]``; 422 otherwise."""
    if not isinstance(body, Mapping):
        raise InvalidInput(
            "the body must be a FHIR Consent or Bundle (JSON object)", code="fhir_invalid"
        )
    if body.get("resourceType") != "Bundle":
        return [("Consent", body)]
    entries = body.get("entry") or []
    if not isinstance(entries, list) or not entries:
        raise InvalidInput("the Bundle has no entries", code="fhir_invalid")
    docs: list[tuple[str, Mapping[str, Any]]] = []
    for n, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping):
            raise InvalidInput(f"Bundle.entry[{n}] has no resource", code="fhir_invalid")
        docs.append((f"Bundle.entry[{n}].resource", resource))
    return docs


def _template_for(
    session: Session, pid: str, imported: ImportedConsent, where: str
) -> TemplateVersion:
    wanted = imported.template
    (text_hash,) = wanted.text_hashes
    rows = list(
        session.execute(
            select(TemplateVersion).where(
                TemplateVersion.project_id == pid, TemplateVersion.status == "published"
            )
        ).scalars()
    )
    for row in rows:
        if row.version_id == wanted.version_id and text_hash in row.text_hashes.values():
            return row
    mine = {p.item_id: p for p in wanted.provisions}
    for row in rows:
        if text_hash not in row.text_hashes.values():
            continue
        theirs = {item["item_id"]: provision_from_dict(item) for item in row.items}
        if all(theirs.get(item_id) == p for item_id, p in mine.items()):
            return row
    raise InvalidInput(
        f"{where}: the template {wanted.version_id} (text {text_hash}) is not published in this "
        "project with the same items",
        code="fhir_template_unknown",
        details={"template": wanted.version_id, "text_hash": text_hash},
    )


def _participant_for(
    session: Session, pid: str, imported: ImportedConsent, override: str | None, where: str
) -> Participant:
    if override is not None:
        return service.get_participant(session, pid, override)
    ref = imported.participant_ref
    kind, _, pseudonym = ref.partition("/")
    if kind != "Patient" or not pseudonym:
        raise InvalidInput(
            f"{where}: the subject {ref!r} is not Patient/<pseudonym>; name the participant "
            "with ?participant=",
            code="fhir_unknown_subject",
        )
    try:
        return service.get_participant(session, pid, pseudonym)
    except NotFound:
        raise NotFound(
            f"{where}: no participant {pseudonym!r} in this project",
            code="participant_not_found",
        ) from None


def _proxy_acting(session: Session, participant: Participant, where: str) -> service.Acting:
    active = [p for p in service.list_proxies(session, participant) if p.ended_at is None]
    if len(active) != 1:
        raise Conflict(
            f"{where}: the document was given by a proxy; the participant needs exactly one "
            f"active proxy to import it (has {len(active)})",
            code="fhir_proxy_unknown",
        )
    return service.Acting(ActorKind.PROXY, active[0])


@dataclass(frozen=True)
class Imported:
    participant: Participant
    rows: list[ConsentEventRow]


def import_documents(
    session: Session,
    trail: AuditTrail,
    pid: str,
    body: Any,
    *,
    participant: str | None,
    age_of_majority: int,
    now: dt.datetime | None = None,
) -> list[Imported]:
    """Validate, map and record every document of ``body`` (the caller commits)."""
    now = now or dt.datetime.now(dt.UTC)
    done: list[Imported] = []
    for where, doc in split_documents(body):
        try:
            imported = from_fhir(doc)
        except InvalidFhirConsent as exc:
            raise InvalidInput(f"{where}: {exc}", code="fhir_invalid") from None
        except FhirConsentError as exc:
            raise InvalidInput(f"{where}: {exc}", code="fhir_unsupported") from None
        person = _participant_for(session, pid, imported, participant, where)
        template = _template_for(session, pid, imported, where)
        (text_hash,) = imported.template.text_hashes
        language = next(
            (lang for lang, h in sorted(template.text_hashes.items()) if h == text_hash),
            None,
        )
        rows: list[ConsentEventRow] = []
        for event in imported.events:
            if event.at > now + _CLOCK_SKEW:
                raise InvalidInput(
                    f"{where}: the {event.kind.value} event is dated in the future ({event.at})",
                    code="fhir_future_time",
                )
            acting = (
                _proxy_acting(session, person, where)
                if event.actor.kind is ActorKind.PROXY
                else service.PARTICIPANT
            )
            names_template = event.kind in (
                EventKind.GIVEN,
                EventKind.PROXY_GIVEN,
                EventKind.CHANGED,
                EventKind.EXPIRED,
            )
            row = service.record_event(
                session,
                trail,
                person,
                kind=event.kind,
                acting=acting,
                channel="import",
                assurance="none",
                template=template if names_template else None,
                language=language if names_template else None,
                choices=event.choice_map,
                scope=event.scope,
                at=event.at,
                age_of_majority=age_of_majority,
            )
            if event.kind is EventKind.PROXY_ENDED and acting.proxy is not None:
                acting.proxy.ended_at = event.at
            rows.append(row)
        done.append(Imported(person, rows))
    return done
