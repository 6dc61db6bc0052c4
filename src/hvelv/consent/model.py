"""Immutable values of the consent engine: templates and their provisions, ledger events,
project approvals, uses and decisions.

All times are timezone-aware :class:`datetime.datetime` values; naive times are refused so that a
decision can never depend on the machine's local zone. Every class validates itself on
construction and raises :class:`ValueError` with a plain message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from hvelv.consent.duo import REQUEST_CODES, Modifiers, Purpose

__all__ = [
    "Actor",
    "ActorKind",
    "ConsentEvent",
    "Decision",
    "Effect",
    "EventKind",
    "Period",
    "ProjectApproval",
    "Provision",
    "Template",
    "Use",
    "WithdrawalScope",
    "merge_periods",
    "require_aware",
]


def require_aware(value: dt.datetime, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a timezone-aware datetime."""
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open interval ``[start, end)``; ``end=None`` means open-ended."""

    start: dt.datetime
    end: dt.datetime | None = None

    def __post_init__(self) -> None:
        require_aware(self.start, "Period.start")
        if self.end is not None:
            require_aware(self.end, "Period.end")
            if self.end <= self.start:
                raise ValueError("Period.end must be after Period.start")

    def contains(self, at: dt.datetime) -> bool:
        """True when ``start <= at < end``."""
        return self.start <= at and (self.end is None or at < self.end)


def merge_periods(periods: Iterable[Period]) -> tuple[Period, ...]:
    """The union of ``periods`` as sorted, disjoint periods; overlapping or adjacent ones are
    joined (``[a, b)`` and ``[b, c)`` give ``[a, c)``), an open end absorbs what follows."""
    merged: list[Period] = []
    for p in sorted(periods, key=lambda p: p.start):
        if merged:
            last = merged[-1]
            if last.end is None:
                break
            if p.start <= last.end:
                end = None if p.end is None else max(last.end, p.end)
                merged[-1] = Period(last.start, end)
                continue
        merged.append(p)
    return tuple(merged)


class Effect(StrEnum):
    """Whether a provision permits or denies what it describes."""

    PERMIT = "permit"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Provision:
    """One item of a consent template.

    ``actions`` and ``data_classes`` name what the item is about; ``None`` means "any" and an
    empty set means "none". ``period`` limits when the item is in force. ``data_period`` (FHIR
    ``Consent.provision.dataPeriod``) is the period of the *data* the item covers: it does not
    decide whether a use is permitted, it comes back with the permit as a constraint on which
    data the use may touch (``Decision.data_periods``). Deny provisions carry no modifiers and no
    data period: a deny applies whatever the requester and whatever the data, which keeps "deny
    wins" unambiguous.

    A *permit* item is in force only while the participant's latest choice for it is "yes". A
    *deny* item is in force whenever the consent it belongs to is (a participant cannot opt out of
    a restriction by not ticking it).
    """

    item_id: str
    effect: Effect
    purpose: Purpose
    actions: frozenset[str] | None = None
    data_classes: frozenset[str] | None = None
    period: Period | None = None
    modifiers: Modifiers = field(default_factory=Modifiers)
    data_period: Period | None = None

    def __post_init__(self) -> None:
        if not self.item_id:
            raise ValueError("Provision.item_id must not be empty")
        if self.effect is Effect.DENY and self.modifiers != Modifiers():
            raise ValueError("deny provisions carry no modifiers")
        if self.effect is Effect.DENY and self.data_period is not None:
            raise ValueError("deny provisions carry no data period")


@dataclass(frozen=True, slots=True)
class Template:
    """A published (immutable) consent template version.

    ``text_hashes`` holds the hash of the text in each language; an event whose ``text_hash`` is
    not one of them did not consent to this template and is ignored.
    """

    version_id: str
    template_id: str
    provisions: tuple[Provision, ...]
    text_hashes: frozenset[str]

    def __post_init__(self) -> None:
        if not self.version_id or not self.template_id:
            raise ValueError("Template needs a version_id and a template_id")
        ids = [p.item_id for p in self.provisions]
        if len(ids) != len(set(ids)):
            raise ValueError("Template item ids must be unique")
        if not self.text_hashes:
            raise ValueError("Template needs at least one text hash")

    def provision(self, item_id: str) -> Provision | None:
        """The provision with this item id, if any."""
        for p in self.provisions:
            if p.item_id == item_id:
                return p
        return None


class ActorKind(StrEnum):
    """Who acted: the participant themself or a proxy (guardian)."""

    PARTICIPANT = "participant"
    PROXY = "proxy"


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    id: str


class EventKind(StrEnum):
    """The kinds of consent ledger events."""

    GIVEN = "given"
    CHANGED = "changed"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    PROXY_GIVEN = "proxy_given"
    PROXY_ENDED = "proxy_ended"


class WithdrawalScope(StrEnum):
    """What a withdrawal asks for; every scope stops further use."""

    STOP_USE = "stop_use"
    DELETE_DATA = "delete_data"
    DESTROY_SAMPLES = "destroy_samples"


_NEEDS_TEMPLATE = frozenset({EventKind.GIVEN, EventKind.PROXY_GIVEN, EventKind.CHANGED})


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """One append-only consent ledger event of one participant.

    * ``given`` — the participant consents to a template version (actor: participant);
    * ``proxy_given`` — a proxy consents on the participant's behalf (actor: proxy);
    * ``changed`` — per-item choices on the consent to the same template;
    * ``withdrawn`` — all consent withdrawn, with a ``scope``;
    * ``expired`` — the consent to ``template_version_id``'s template (all consents when
      ``None``) has expired;
    * ``proxy_ended`` — every proxy representation ends now.

    ``choices`` maps item ids to yes/no; it is stored as a sorted tuple of pairs so that events
    are hashable. ``seq`` is the event's position in the ledger (``>= 1``).
    """

    seq: int
    participant: str
    kind: EventKind
    at: dt.datetime
    actor: Actor
    template_version_id: str | None = None
    text_hash: str | None = None
    choices: tuple[tuple[str, bool], ...] = ()
    scope: WithdrawalScope | None = None

    def __post_init__(self) -> None:
        if self.seq < 1:
            raise ValueError("ConsentEvent.seq must be >= 1")
        require_aware(self.at, "ConsentEvent.at")
        kind = self.kind
        if kind is EventKind.GIVEN and self.actor.kind is not ActorKind.PARTICIPANT:
            raise ValueError("a 'given' event is by the participant; a proxy uses 'proxy_given'")
        if kind is EventKind.PROXY_GIVEN and self.actor.kind is not ActorKind.PROXY:
            raise ValueError("a 'proxy_given' event is by a proxy")
        if kind in _NEEDS_TEMPLATE and (self.template_version_id is None or not self.text_hash):
            raise ValueError(f"a '{kind}' event needs template_version_id and text_hash")
        if kind is EventKind.CHANGED and not self.choices:
            raise ValueError("a 'changed' event needs at least one choice")
        if (kind is EventKind.WITHDRAWN) != (self.scope is not None):
            raise ValueError("scope is given with 'withdrawn' events and only with them")
        normalized = tuple(sorted(self.choices))
        if len({item for item, _ in normalized}) != len(normalized):
            raise ValueError("an item has more than one choice in one event")
        object.__setattr__(self, "choices", normalized)

    @property
    def choice_map(self) -> Mapping[str, bool]:
        """``choices`` as a dict."""
        return dict(self.choices)


@dataclass(frozen=True, slots=True)
class ProjectApproval:
    """What the project's (ethics) approval allows: when, for which purposes, which actions."""

    project_id: str
    period: Period
    purposes: tuple[Purpose, ...]
    actions: frozenset[str]


@dataclass(frozen=True, slots=True)
class Use:
    """A proposed use of one participant's data.

    ``purpose`` is a requested purpose (GRU, HMB, DS + disease or POA). ``commercial`` marks a
    commercial purpose; ``requester_for_profit`` a for-profit requesting organisation.
    ``geography`` is where the data will be used (for GS), e.g. an ISO 3166 code.
    """

    project_id: str
    purpose: Purpose
    action: str
    data_class: str
    requester_id: str
    requester_institution: str
    commercial: bool = False
    requester_for_profit: bool = False
    geography: str | None = None
    genetic_study: bool = False
    methods_development: bool = False
    clinical_care: bool = False

    def __post_init__(self) -> None:
        if self.purpose.code not in REQUEST_CODES:
            raise ValueError(f"{self.purpose.code} is not a purpose a use can request")


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :func:`hvelv.consent.decision.decide`.

    ``reasons`` explain a deny (every failed rule) or name the permitting items;
    ``obligations`` are DUO codes (PUB, COL, RTN) the requester must honour;
    ``ledger_position`` is the highest ``seq`` among the events the decision considered (0 when
    there were none); ``data_periods`` constrains a permit to data from these periods (sorted,
    disjoint, merged: the union of the permitting items' data periods), ``None`` when the use may
    touch data of any time (some permitting item has no data period) and always on a deny.
    """

    permit: bool
    reasons: tuple[str, ...]
    obligations: tuple[str, ...]
    ledger_position: int
    data_periods: tuple[Period, ...] | None = None
