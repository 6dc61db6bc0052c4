"""Shared test data for the consent engine tests."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from hvelv.consent.duo import Duo, Modifiers, Purpose
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

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)

CANCER = "MONDO:0004992"
BREAST = "MONDO:0007254"
DIABETES = "MONDO:0005015"
T1D = "MONDO:0005147"
T2D = "MONDO:0005148"


def day(n: float) -> dt.datetime:
    """``n`` days after 1 January 2024 (UTC)."""
    return T0 + dt.timedelta(days=n)


ME = Actor(ActorKind.PARTICIPANT, "p1")
MUM = Actor(ActorKind.PROXY, "guardian-1")

HASH_NB = "sha256:main-v1-nb"
HASH_EN = "sha256:main-v1-en"
HASH_V2 = "sha256:main-v2-nb"
HASH_BIO = "sha256:bio-v1-nb"

# data periods (the period of the data an item covers): ten years up to T0; from a year before T0
DATA_FROM_2014 = Period(day(-3652), day(0))
DATA_SINCE_2023 = Period(day(-365))

MAIN_V1 = Template(
    version_id="main@1",
    template_id="main",
    provisions=(
        Provision("hmb", Effect.PERMIT, Purpose(Duo.HMB), frozenset({"store", "analyse"})),
        Provision(
            "cancer",
            Effect.PERMIT,
            Purpose(Duo.DS, CANCER),
            frozenset({"analyse"}),
            modifiers=Modifiers(frozenset({Duo.PUB, Duo.COL})),
            data_period=DATA_FROM_2014,
        ),
        Provision(
            "commercial-partner",
            Effect.PERMIT,
            Purpose(Duo.GRU),
            frozenset({"share"}),
            modifiers=Modifiers(frozenset({Duo.IS, Duo.RTN}), institutions=frozenset({"Pharma"})),
        ),
        Provision("ancestry", Effect.PERMIT, Purpose(Duo.POA), frozenset({"analyse"})),
        Provision(
            "no-genome-share",
            Effect.DENY,
            Purpose(Duo.GRU),
            frozenset({"share"}),
            frozenset({"genome"}),
        ),
    ),
    text_hashes=frozenset({HASH_NB, HASH_EN}),
)

MAIN_V2 = dataclasses.replace(
    MAIN_V1,
    version_id="main@2",
    provisions=(
        *MAIN_V1.provisions,
        Provision(
            "recontact",
            Effect.PERMIT,
            Purpose(Duo.GRU),
            frozenset({"recontact"}),
            period=Period(day(0), day(400)),
        ),
    ),
    text_hashes=frozenset({HASH_V2}),
)

BIOBANK_V1 = Template(
    version_id="bio@1",
    template_id="bio",
    provisions=(
        Provision(
            "samples",
            Effect.PERMIT,
            Purpose(Duo.DS, DIABETES),
            frozenset({"analyse", "store"}),
            frozenset({"biobank_sample"}),
            modifiers=Modifiers(frozenset({Duo.NPUNCU})),
            data_period=DATA_SINCE_2023,
        ),
        Provision("no-t2d", Effect.DENY, Purpose(Duo.DS, T2D)),
    ),
    text_hashes=frozenset({HASH_BIO}),
)

TEMPLATES: Mapping[str, Template] = {t.version_id: t for t in (MAIN_V1, MAIN_V2, BIOBANK_V1)}
lookup = TEMPLATES.get

APPROVAL = ProjectApproval(
    project_id="proj-1",
    period=Period(day(0), day(3650)),
    purposes=(Purpose(Duo.GRU),),
    actions=frozenset({"store", "analyse", "share", "recontact"}),
)

USE = Use(
    project_id="proj-1",
    purpose=Purpose(Duo.HMB),
    action="analyse",
    data_class="questionnaire",
    requester_id="u-1",
    requester_institution="UiO",
    geography="NO",
)


def use(**changes: object) -> Use:
    return dataclasses.replace(USE, **changes)  # type: ignore[arg-type]


def ev(
    seq: int,
    kind: EventKind,
    when: dt.datetime,
    *,
    actor: Actor = ME,
    version: str | None = None,
    text_hash: str | None = None,
    choices: Mapping[str, bool] | None = None,
    scope: WithdrawalScope | None = None,
    participant: str = "p1",
) -> ConsentEvent:
    return ConsentEvent(
        seq=seq,
        participant=participant,
        kind=kind,
        at=when,
        actor=actor,
        template_version_id=version,
        text_hash=text_hash,
        choices=tuple((choices or {}).items()),
        scope=scope,
    )


def given(
    seq: int,
    when: dt.datetime,
    choices: Mapping[str, bool] | None = None,
    *,
    version: str = "main@1",
    text_hash: str = HASH_NB,
    participant: str = "p1",
) -> ConsentEvent:
    return ev(
        seq,
        EventKind.GIVEN,
        when,
        version=version,
        text_hash=text_hash,
        choices=choices if choices is not None else {"hmb": True},
        participant=participant,
    )


def proxy_given(
    seq: int,
    when: dt.datetime,
    choices: Mapping[str, bool] | None = None,
    *,
    version: str = "main@1",
    text_hash: str = HASH_NB,
    participant: str = "p1",
) -> ConsentEvent:
    return ev(
        seq,
        EventKind.PROXY_GIVEN,
        when,
        actor=MUM,
        version=version,
        text_hash=text_hash,
        choices=choices if choices is not None else {"hmb": True},
        participant=participant,
    )


def changed(
    seq: int,
    when: dt.datetime,
    choices: Mapping[str, bool],
    *,
    actor: Actor = ME,
    version: str = "main@1",
    text_hash: str = HASH_NB,
) -> ConsentEvent:
    return ev(
        seq,
        EventKind.CHANGED,
        when,
        actor=actor,
        version=version,
        text_hash=text_hash,
        choices=choices,
    )


def withdrawn(
    seq: int,
    when: dt.datetime,
    scope: WithdrawalScope = WithdrawalScope.STOP_USE,
    *,
    actor: Actor = ME,
    participant: str = "p1",
) -> ConsentEvent:
    return ev(seq, EventKind.WITHDRAWN, when, actor=actor, scope=scope, participant=participant)
