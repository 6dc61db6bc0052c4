from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.consent.model import ConsentEvent, EventKind, ProjectApproval, Use
from hvelv.consent.snapshot import ConsentIndex, Snapshot
from tests.consent.factories import (
    APPROVAL,
    HASH_BIO,
    MUM,
    USE,
    day,
    ev,
    lookup,
    proxy_given,
    withdrawn,
)
from tests.consent.factories import (
    given as given_event,
)
from tests.consent.strategies import births, decision_times, ledgers, uses

PROPS = settings(max_examples=100, deadline=None)


def index_of(people: dict[str, dt.date | None]) -> ConsentIndex:
    index = ConsentIndex(template_lookup=lookup)
    index.add_participants(people.items())
    return index


def expected(
    index: ConsentIndex, u: Use, at: dt.datetime, approval: ProjectApproval | None = APPROVAL
) -> tuple[frozenset[str], int]:
    names = [n for n in ("a", "b", "c", "d") if n in index]
    decisions = {n: index.decide(n, u, at, approval=approval) for n in names}
    return (
        frozenset(n for n, d in decisions.items() if d.permit),
        max((d.ledger_position for d in decisions.values()), default=0),
    )


def test_snapshot_basics() -> None:
    index = index_of({"a": None, "b": dt.date(1980, 1, 1), "c": dt.date(2010, 6, 15), "d": None})
    index.load(
        [
            given_event(1, day(1), participant="a"),
            given_event(2, day(2), participant="b"),
            withdrawn(5, day(30), actor=MUM, participant="b"),
            proxy_given(3, day(3), participant="c"),
        ]
    )  # fmt: skip
    assert len(index) == 4
    assert "a" in index
    assert index.distinct_states >= 3
    snap = index.snapshot(USE, day(10), approval=APPROVAL)
    assert snap == Snapshot(USE, day(10), 3, frozenset({"a", "b", "c"}))
    assert index.snapshot(USE, day(40), approval=APPROVAL).pseudonyms == {"a", "c"}
    assert index.snapshot(USE, day(40), approval=APPROVAL).ledger_position == 5
    # c turns 16 on 2026-06-15: the proxy's consent stops
    later = dt.datetime(2026, 6, 15, tzinfo=dt.UTC)
    assert index.snapshot(USE, later, approval=APPROVAL).pseudonyms == {"a"}
    assert index.snapshot(USE, day(10), approval=None).pseudonyms == frozenset()
    assert index.events("a")[0].seq == 1


def test_empty_index() -> None:
    index = index_of({})
    assert index.snapshot(USE, day(1), approval=APPROVAL) == Snapshot(USE, day(1), 0, frozenset())


def test_index_input_errors() -> None:
    index = index_of({"a": None})
    with pytest.raises(ValueError, match="already"):
        index.add_participants([("a", None)])
    with pytest.raises(KeyError, match="not in the index"):
        index.apply(given_event(1, day(1), participant="zz"))
    with pytest.raises(ValueError, match="share a seq"):
        index.load(
            [given_event(1, day(1), participant="a"), given_event(1, day(2), participant="a")]
        )
    index2 = index_of({"a": None})
    index2.apply(given_event(1, day(1), participant="a"))
    with pytest.raises(ValueError, match="already in the ledger"):
        index2.apply(given_event(1, day(2), participant="a"))
    with pytest.raises(ValueError, match="aware"):
        index2.snapshot(USE, dt.datetime(2024, 3, 1), approval=APPROVAL)


def test_live_snapshot_follows_events() -> None:
    index = index_of({"a": None, "b": None})
    index.load([given_event(1, day(1), participant="a")])
    live = index.watch(USE, day(100), approval=APPROVAL)
    assert set(live) == {"a"}
    assert len(live) == 1
    assert live.ledger_position == 1
    index.apply(given_event(2, day(50), participant="b"))
    assert "b" in live
    assert live.ledger_position == 2
    index.apply(withdrawn(3, day(60), actor=MUM, participant="a"))
    assert "a" not in live
    # an event after the live snapshot's time does not change it
    index.apply(dataclasses.replace(given_event(4, day(200), participant="a")))
    assert "a" not in live
    assert live.ledger_position == 3
    # an event that arrives late but happened before: refold
    index.apply(given_event(5, day(70), participant="a"))
    assert "a" in live
    # new participants join the live snapshot
    index.add_participants([("c", None)])
    index.apply(given_event(6, day(80), participant="c"))
    assert set(live) == {"a", "b", "c"}
    frozen = live.freeze()
    assert frozen == index.snapshot(USE, day(100), approval=APPROVAL)
    index.unwatch(live)
    index.apply(withdrawn(7, day(90), actor=MUM, participant="c"))
    assert "c" in live  # no longer updated


def test_live_snapshot_caches_per_state_and_age() -> None:
    index = index_of({"kid1": dt.date(2010, 1, 1), "kid2": dt.date(2010, 2, 2), "adult": None})
    live = index.watch(USE, day(100), approval=APPROVAL)
    index.apply(proxy_given(1, day(1), participant="kid1"))
    index.apply(proxy_given(2, day(2), participant="kid2"))
    index.apply(proxy_given(3, day(3), participant="adult"))  # ignored: birth date unknown
    index.apply(ev(4, EventKind.GIVEN, day(4), version="bio@1", text_hash=HASH_BIO,
                   choices={"samples": True}, participant="adult"))  # fmt: skip
    assert set(live) == {"kid1", "kid2"}
    assert live.freeze() == index.snapshot(USE, day(100), approval=APPROVAL)


PEOPLE = ["a", "b", "c", "d"]


@st.composite
def populations(draw: st.DrawFn) -> tuple[dict[str, dt.date | None], list[ConsentEvent]]:
    people = {name: draw(births) for name in PEOPLE}
    events: list[ConsentEvent] = []
    for name in PEOPLE:
        events.extend(draw(ledgers(participant=name, first_seq=len(events) + 1, max_size=6)))
    return people, events


@PROPS
@given(populations(), uses, decision_times)
def test_bulk_snapshot_equals_per_participant_decisions(
    population: tuple[dict[str, dt.date | None], list[ConsentEvent]],
    u: Use,
    at: dt.datetime,
) -> None:
    people, events = population
    index = index_of(people)
    index.load(events)
    snap = index.snapshot(u, at, approval=APPROVAL)
    names, position = expected(index, u, at)
    assert snap.pseudonyms == names
    assert snap.ledger_position == position


@PROPS
@given(populations(), uses, decision_times, st.randoms(use_true_random=False))
def test_incremental_equals_from_scratch(
    population: tuple[dict[str, dt.date | None], list[ConsentEvent]],
    u: Use,
    at: dt.datetime,
    rnd: object,
) -> None:
    people, events = population
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    index = index_of(people)
    live = index.watch(u, at, approval=APPROVAL)
    for event in shuffled:
        index.apply(event)
    scratch = index_of(people)
    scratch.load(events)
    snap = scratch.snapshot(u, at, approval=APPROVAL)
    assert index.snapshot(u, at, approval=APPROVAL) == snap
    assert live.freeze().pseudonyms == snap.pseudonyms
    names, position = expected(scratch, u, at)
    assert snap.pseudonyms == names
    # the live snapshot's position counts every applied event up to its time
    assert live.ledger_position == max((e.seq for e in events if e.at <= at), default=0)
    assert position == live.ledger_position


def test_index_grows_past_its_initial_capacity() -> None:
    index = index_of({})
    for n in range(40):
        index.add_participants([(f"x{n}", None)])
        index.apply(given_event(n + 1, day(1), participant=f"x{n}"))
    snap = index.snapshot(USE, day(2), approval=APPROVAL)
    assert len(snap.pseudonyms) == 40
    assert snap.ledger_position == 40
