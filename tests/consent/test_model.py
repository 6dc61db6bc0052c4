from __future__ import annotations

import datetime as dt

import pytest

from hvelv.consent.duo import Duo, Modifiers, Purpose
from hvelv.consent.model import (
    Actor,
    ActorKind,
    ConsentEvent,
    Effect,
    EventKind,
    Period,
    Provision,
    Template,
    WithdrawalScope,
)
from tests.consent.factories import HASH_NB, MAIN_V1, ME, MUM, day

NAIVE = dt.datetime(2024, 1, 1)


def test_period() -> None:
    p = Period(day(1), day(2))
    assert p.contains(day(1))
    assert p.contains(day(1.5))
    assert not p.contains(day(2))
    assert not p.contains(day(0))
    assert Period(day(1)).contains(day(10_000))
    with pytest.raises(ValueError, match="aware"):
        Period(NAIVE)
    with pytest.raises(ValueError, match="aware"):
        Period(day(1), NAIVE)
    with pytest.raises(ValueError, match="after"):
        Period(day(2), day(2))


def test_provision_validation() -> None:
    with pytest.raises(ValueError, match="item_id"):
        Provision("", Effect.PERMIT, Purpose(Duo.GRU))
    with pytest.raises(ValueError, match="no modifiers"):
        Provision("x", Effect.DENY, Purpose(Duo.GRU), modifiers=Modifiers(frozenset({Duo.NCU})))


def test_template_validation() -> None:
    p = Provision("x", Effect.PERMIT, Purpose(Duo.GRU))
    with pytest.raises(ValueError, match="version_id"):
        Template("", "t", (p,), frozenset({"h"}))
    with pytest.raises(ValueError, match="unique"):
        Template("t@1", "t", (p, p), frozenset({"h"}))
    with pytest.raises(ValueError, match="text hash"):
        Template("t@1", "t", (p,), frozenset())
    assert MAIN_V1.provision("hmb") is MAIN_V1.provisions[0]
    assert MAIN_V1.provision("nope") is None


def event(**kw: object) -> ConsentEvent:
    base: dict[str, object] = {
        "seq": 1,
        "participant": "p1",
        "kind": EventKind.GIVEN,
        "at": day(1),
        "actor": ME,
        "template_version_id": "main@1",
        "text_hash": HASH_NB,
        "choices": (("hmb", True),),
    }
    base.update(kw)
    return ConsentEvent(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"seq": 0}, "seq"),
        ({"at": NAIVE}, "aware"),
        ({"actor": MUM}, "proxy uses 'proxy_given'"),
        ({"kind": EventKind.PROXY_GIVEN}, "by a proxy"),
        ({"template_version_id": None}, "needs template_version_id"),
        ({"text_hash": ""}, "needs template_version_id"),
        ({"kind": EventKind.CHANGED, "choices": ()}, "at least one choice"),
        ({"kind": EventKind.WITHDRAWN}, "scope"),
        ({"scope": WithdrawalScope.STOP_USE}, "scope"),
        ({"choices": (("hmb", True), ("hmb", False))}, "more than one choice"),
    ],
)
def test_event_validation(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        event(**kw)


def test_event_choices_are_normalised() -> None:
    e = event(choices=(("b", True), ("a", False)))
    assert e.choices == (("a", False), ("b", True))
    assert e.choice_map == {"a": False, "b": True}
    assert hash(e) == hash(event(choices=(("a", False), ("b", True))))
    w = event(kind=EventKind.WITHDRAWN, scope=WithdrawalScope.DELETE_DATA, choices=())
    assert w.scope is WithdrawalScope.DELETE_DATA
    assert Actor(ActorKind.PROXY, "g").kind is ActorKind.PROXY
