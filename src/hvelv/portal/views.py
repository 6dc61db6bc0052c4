"""What the pages show, read through the consent services (no consent logic of its own): the
participant's studies with each item's state, open requests, the timeline, the uses that relied
on the consent, and signed receipts."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from hvelv.consent import decisions, receipts, service
from hvelv.consent.mapping import event_from_row, template_from_row, use_from_dict
from hvelv.consent.models import ConsentEventRow, Participant, Study, TemplateVersion
from hvelv.platform import Platform
from hvelv.portal import i18n
from hvelv.projects.models import Project


@dataclass
class ItemView:
    item_id: str
    title: str
    permit: bool
    granted: bool
    purpose: str
    actions: list[str]
    data: list[str]


@dataclass
class TemplateView:
    key: str
    version_id: str
    title: str
    study: str
    text: str
    text_language: str
    consented: bool
    by_proxy: bool
    items: list[ItemView] = field(default_factory=list)

    @property
    def granted(self) -> int:
        return sum(1 for i in self.items if i.permit and i.granted)

    @property
    def permits(self) -> int:
        return sum(1 for i in self.items if i.permit)


def _purpose(language: str, purpose: dict[str, Any]) -> str:
    code = str(purpose.get("code", "GRU"))
    key = f"purpose.{code}"
    if key not in i18n.CATALOGUES["en"]:
        return code
    if code == "DS":
        disease = str(purpose.get("disease") or "")
        try:
            from hvelv.consent.diseases import default_hierarchy

            hierarchy = default_hierarchy()
            label = hierarchy.term(disease).label if disease in hierarchy else disease
        except Exception:  # a label is a nicety; the code still says what it is
            label = disease
        return i18n.translate(language, key, disease=label)
    return i18n.translate(language, key)


def _item(language: str, item: dict[str, Any], granted: set[str]) -> ItemView:
    purpose = _purpose(language, item.get("purpose") or {})
    titles = item.get("titles") or {}
    title = titles.get(language) or titles.get("nb" if language == "nn" else language)
    title = title or (titles.get("en") if language == "en" else None) or purpose
    title = str(title[0].upper() + title[1:]) if title else item["item_id"]
    actions = item.get("actions")
    classes = item.get("data_classes")
    return ItemView(
        item_id=item["item_id"],
        title=title,
        permit=item["effect"] == "permit",
        granted=item["item_id"] in granted,
        purpose=purpose,
        actions=[i18n.translate(language, f"action.{a}") for a in actions or []],
        data=[i18n.translate(language, f"data.{d}") for d in classes]
        if classes
        else [i18n.translate(language, "data.any")],
    )


def template_view(
    session: Session,
    row: TemplateVersion,
    language: str,
    *,
    granted: set[str],
    consented: bool,
    by_proxy: bool,
) -> TemplateView:
    lang = (
        language if language in row.texts else ("nb" if "nb" in row.texts else sorted(row.texts)[0])
    )
    study = session.get(Study, row.study_id)
    return TemplateView(
        key=row.template_key,
        version_id=row.version_id,
        title=row.title,
        study=study.name if study else "",
        text=row.texts[lang],
        text_language=lang,
        consented=consented,
        by_proxy=by_proxy,
        items=[_item(language, item, granted) for item in row.items],
    )


def consents(
    session: Session, participant: Participant, language: str, age_of_majority: int
) -> tuple[list[TemplateView], dict[str, Any] | None]:
    """Every published template (latest version, or the version consented to) with its state."""
    choices, view = service.participant_templates(
        session, participant, age_of_majority=age_of_majority
    )
    out = [
        template_view(
            session,
            c.row,
            language,
            granted=set(c.granted),
            consented=c.consented,
            by_proxy=c.by_proxy,
        )
        for c in choices
    ]
    return out, view.withdrawal


def majority_date(participant: Participant, age: int) -> dt.date:
    born = participant.birth_date
    try:
        return born.replace(year=born.year + age)
    except ValueError:  # 29 February
        return dt.date(born.year + age, 3, 1)


@dataclass
class EventView:
    seq: int
    kind: str
    at: dt.datetime
    actor: str
    title: str | None
    choices: list[tuple[str, bool]]
    scope: str | None


def timeline(session: Session, participant: Participant, language: str) -> list[EventView]:
    out = []
    titles: dict[str, str] = {}
    for row in service.event_rows_of(session, participant):
        title = None
        names: dict[str, str] = {}
        if row.template_version_id:
            template = service.get_version_by_id(
                session, participant.project_id, row.template_version_id
            )
            title = titles.setdefault(row.template_version_id, template.title)
            names = {
                i.item_id: i.title for i in (_item(language, x, set()) for x in template.items)
            }
        out.append(
            EventView(
                seq=row.seq,
                kind=row.kind,
                at=row.at,
                actor="system" if row.channel == "system" else row.actor_kind,
                title=title,
                choices=[(names.get(k, k), v) for k, v in sorted(row.choices.items())],
                scope=row.scope,
            )
        )
    out.reverse()
    return out


@dataclass
class UseView:
    at: dt.datetime
    kind: str
    requester: str
    institution: str
    purpose: str
    action: str
    data: str


def uses(
    session: Session, participant: Participant, language: str, age_of_majority: int
) -> list[UseView]:
    out = []
    for entry in decisions.relied_on(session, participant, age_of_majority=age_of_majority):
        use = use_from_dict(entry.use)
        purpose = entry.use.get("purpose") or {}
        out.append(
            UseView(
                at=entry.at,
                kind=entry.kind,
                requester=entry.requester,
                institution=use.requester_institution,
                purpose=_purpose(language, purpose if isinstance(purpose, dict) else {}),
                action=i18n.translate(language, f"action.{use.action}"),
                data=i18n.translate(language, f"data.{use.data_class}"),
            )
        )
    out.reverse()
    return out


def event_row(session: Session, participant: Participant, seq: int) -> ConsentEventRow | None:
    row = session.get(ConsentEventRow, (participant.project_id, seq))
    if row is None or row.participant_id != participant.id:
        return None
    return row


def receipt(
    session: Session,
    platform: Platform,
    participant: Participant,
    row: ConsentEventRow,
    language: str,
) -> dict[str, Any]:
    """A signed consent receipt for one of the participant's ledger events."""
    project = session.get(Project, participant.project_id)
    assert project is not None
    template = None
    study = None
    if row.template_version_id:
        version = service.get_version_by_id(session, project.pid, row.template_version_id)
        template = template_from_row(version)
        found = session.get(Study, version.study_id)
        study = found.name if found else None
    document = receipts.build_receipt(
        event=event_from_row(row, participant.pseudonym),
        event_id=f"{project.pid}:{row.seq}",
        subject_pseudonym=participant.pseudonym,
        controller=receipts.Controller(
            name=project.name, contact=f"{project.name} ({project.ethics_ref})"
        ),
        ledger_position=row.seq,
        ledger_hash=bytes(row.hash).hex(),
        issued_at=dt.datetime.now(dt.UTC),
        template=template,
        language=row.language or language,
        collection_method=f"{row.channel} ({row.actor_kind})",
        study=study,
        receipt_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"hvelv:{project.pid}:{row.seq}")),
    )
    return receipts.sign_receipt(document, platform.keyring.signing_key)
