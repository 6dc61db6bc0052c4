"""Between stored rows (JSON columns) and the engine's immutable values.

Template items are stored as plain JSON dicts; :func:`provision_from_dict` and
:func:`provision_to_dict` convert both ways (a round trip gives equal values). A project's
approval (dates and DUO purposes on the project row) becomes a :class:`ProjectApproval`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from hvelv.consent.duo import DUO_TERMS, Duo, Modifiers, Purpose
from hvelv.consent.model import (
    Actor,
    ActorKind,
    ConsentEvent,
    Effect,
    EventKind,
    Period,
    ProjectApproval,
    Provision,
    Template,
    Use,
    WithdrawalScope,
)
from hvelv.consent.models import TemplateVersion
from hvelv.projects.models import Project

__all__ = [
    "CONSENT_ACTIONS",
    "DATA_CLASSES",
    "approval_from_dict",
    "approval_of",
    "approval_to_dict",
    "duo_code",
    "event_from_row",
    "period_from_dict",
    "period_to_dict",
    "provision_from_dict",
    "provision_to_dict",
    "template_from_row",
    "text_hash",
    "use_from_dict",
    "use_to_dict",
]

# what a consent item can be about (the examples); a use names one of each
CONSENT_ACTIONS = frozenset(
    {"store", "analyse", "link_registries", "share", "recontact", "return_results"}
)
DATA_CLASSES = frozenset(
    {"questionnaire", "registry", "biobank_sample", "genome", "clinical", "imaging", "wearable"}
)

_BY_ID = {term.id: code for code, term in DUO_TERMS.items()}


def duo_code(value: str) -> Duo:
    """``GRU`` or ``DUO:0000042`` → :class:`Duo`; ``ValueError`` when unknown."""
    if value in _BY_ID:
        return _BY_ID[value]
    try:
        return Duo(value)
    except ValueError:
        raise ValueError(f"unknown DUO code {value!r}") from None


def text_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _time(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(value)
    if parsed.utcoffset() is None:
        raise ValueError("times need a time zone")
    return parsed


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat()


def purpose_from_dict(data: dict[str, Any]) -> Purpose:
    return Purpose(duo_code(str(data["code"])), data.get("disease"))


def purpose_to_dict(purpose: Purpose) -> dict[str, Any]:
    return {"code": purpose.code.value, "disease": purpose.disease}


def _set(values: Any) -> frozenset[str] | None:
    return None if values is None else frozenset(str(v) for v in values)


def period_from_dict(data: dict[str, Any] | None) -> Period | None:
    start = _time(data.get("start")) if data else None
    return Period(start, _time(data.get("end"))) if data and start else None


def period_to_dict(period: Period | None) -> dict[str, Any] | None:
    return None if period is None else {"start": _iso(period.start), "end": _iso(period.end)}


def provision_from_dict(data: dict[str, Any]) -> Provision:
    """A stored item → :class:`Provision`; ``ValueError`` (plain message) when invalid. Items
    stored before data periods existed have no ``data_period`` key: none."""
    mods = data.get("modifiers") or {}
    return Provision(
        item_id=str(data["item_id"]),
        effect=Effect(data["effect"]),
        purpose=purpose_from_dict(data["purpose"]),
        actions=_set(data.get("actions")),
        data_classes=_set(data.get("data_classes")),
        period=period_from_dict(data.get("period")),
        data_period=period_from_dict(data.get("data_period")),
        modifiers=Modifiers(
            codes=frozenset(duo_code(c) for c in mods.get("codes", [])),
            time_limit=_time(mods.get("time_limit")),
            regions=frozenset(mods.get("regions", [])),
            institutions=frozenset(mods.get("institutions", [])),
            projects=frozenset(mods.get("projects", [])),
            users=frozenset(mods.get("users", [])),
        ),
    )


def provision_to_dict(p: Provision, titles: dict[str, str] | None = None) -> dict[str, Any]:
    m = p.modifiers
    return {
        "item_id": p.item_id,
        "effect": p.effect.value,
        "purpose": purpose_to_dict(p.purpose),
        "actions": None if p.actions is None else sorted(p.actions),
        "data_classes": None if p.data_classes is None else sorted(p.data_classes),
        "period": period_to_dict(p.period),
        "data_period": period_to_dict(p.data_period),
        "modifiers": {
            "codes": sorted(c.value for c in m.codes),
            "time_limit": _iso(m.time_limit),
            "regions": sorted(m.regions),
            "institutions": sorted(m.institutions),
            "projects": sorted(m.projects),
            "users": sorted(m.users),
        },
        "titles": dict(titles or {}),
    }


def template_from_row(row: TemplateVersion) -> Template:
    return Template(
        version_id=row.version_id,
        template_id=row.template_key,
        provisions=tuple(provision_from_dict(item) for item in row.items),
        text_hashes=frozenset(row.text_hashes.values()),
    )


def event_from_row(row: Any, pseudonym: str) -> ConsentEvent:
    """An engine event from a ledger row: a ``ConsentEventRow`` or a Core row of its columns."""
    return ConsentEvent(
        seq=row.seq,
        participant=pseudonym,
        kind=EventKind(row.kind),
        at=row.at,
        actor=Actor(ActorKind(row.actor_kind), row.actor_id),
        template_version_id=row.template_version_id,
        text_hash=row.text_hash,
        choices=tuple(sorted(row.choices.items())),
        scope=WithdrawalScope(row.scope) if row.scope else None,
    )


def approval_of(project: Project) -> ProjectApproval:
    """The project's approval: its period (whole days, UTC), its DUO purposes, and every
    consent action (projects do not yet declare approved actions)."""
    purposes: list[Purpose] = []
    for item in project.purposes:
        try:
            purposes.append(purpose_from_dict(item))
        except (ValueError, KeyError):
            continue  # e.g. DS without a disease: it covers no request
    start = dt.datetime.combine(project.approval_start, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(project.approval_end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return ProjectApproval(project.pid, Period(start, end), tuple(purposes), CONSENT_ACTIONS)


def approval_to_dict(approval: ProjectApproval) -> dict[str, Any]:
    return {
        "project_id": approval.project_id,
        "start": _iso(approval.period.start),
        "end": _iso(approval.period.end),
        "purposes": [purpose_to_dict(p) for p in approval.purposes],
        "actions": sorted(approval.actions),
    }


def approval_from_dict(data: dict[str, Any]) -> ProjectApproval:
    start = _time(data["start"])
    assert start is not None
    return ProjectApproval(
        data["project_id"],
        Period(start, _time(data["end"])),
        tuple(purpose_from_dict(p) for p in data["purposes"]),
        frozenset(data["actions"]),
    )


_USE_FLAGS = (
    "commercial",
    "requester_for_profit",
    "genetic_study",
    "methods_development",
    "clinical_care",
)


def use_to_dict(use: Use) -> dict[str, Any]:
    data: dict[str, Any] = {
        "project_id": use.project_id,
        "purpose": purpose_to_dict(use.purpose),
        "action": use.action,
        "data_class": use.data_class,
        "requester_id": use.requester_id,
        "requester_institution": use.requester_institution,
        "geography": use.geography,
    }
    data.update({flag: getattr(use, flag) for flag in _USE_FLAGS})
    return data


def use_from_dict(data: dict[str, Any]) -> Use:
    return Use(
        project_id=data["project_id"],
        purpose=purpose_from_dict(data["purpose"]),
        action=data["action"],
        data_class=data["data_class"],
        requester_id=data["requester_id"],
        requester_institution=data["requester_institution"],
        geography=data.get("geography"),
        **{flag: bool(data.get(flag, False)) for flag in _USE_FLAGS},
    )
