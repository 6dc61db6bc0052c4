"""Property tests of decide() over random ledgers (the issue's "what must be shown")."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.consent.decision import decide, is_minor
from hvelv.consent.diseases import default_hierarchy
from hvelv.consent.duo import covers
from hvelv.consent.model import (
    ActorKind,
    ConsentEvent,
    Decision,
    Effect,
    EventKind,
    Use,
    WithdrawalScope,
)
from tests.consent.factories import APPROVAL, TEMPLATES, day, lookup, withdrawn
from tests.consent.strategies import births, decision_times, ledgers, times, uses

PROPS = settings(max_examples=120, deadline=None)
CONSENTS = (EventKind.GIVEN, EventKind.PROXY_GIVEN)


def run(events: list[ConsentEvent], u: Use, at: dt.datetime, birth: dt.date | None) -> Decision:
    return decide(
        events, u, at, approval=APPROVAL, template_lookup=lookup, participant_birth_date=birth
    )


@PROPS
@given(ledgers(), uses, times, births, times, st.sampled_from(list(WithdrawalScope)))
def test_withdrawal_always_wins_after_its_time(
    events: list[ConsentEvent],
    u: Use,
    t_withdraw: dt.datetime,
    birth: dt.date | None,
    later: dt.datetime,
    scope: WithdrawalScope,
) -> None:
    at = max(t_withdraw, later)
    w = withdrawn(len(events) + 1, t_withdraw, scope)
    # nothing re-consents between the withdrawal and the decision
    kept = [e for e in events if not (e.kind in CONSENTS and e.at >= t_withdraw)]
    d = run([*kept, w], u, at, birth)
    assert not d.permit
    assert any(r.startswith("withdrawn.") for r in d.reasons)


@PROPS
@given(ledgers(), uses, decision_times, births)
def test_decision_at_t_only_depends_on_events_up_to_t(
    events: list[ConsentEvent], u: Use, at: dt.datetime, birth: dt.date | None
) -> None:
    full = run(events, u, at, birth)
    past = run([e for e in events if e.at <= at], u, at, birth)
    assert full == past
    assert full.ledger_position == max((e.seq for e in events if e.at <= at), default=0)


@PROPS
@given(ledgers(), uses, decision_times, births)
def test_no_permit_without_a_covering_event(
    events: list[ConsentEvent], u: Use, at: dt.datetime, birth: dt.date | None
) -> None:
    d = run(events, u, at, birth)
    if not d.permit:
        return
    diseases = default_hierarchy()
    assert d.reasons
    for reason in d.reasons:
        version, item = reason.removeprefix("permit.").split("/")
        provision = TEMPLATES[version].provision(item)
        assert provision is not None
        assert provision.effect is Effect.PERMIT
        assert covers(provision.purpose, u.purpose, diseases)
        assert any(
            e.at <= at
            and e.kind in (*CONSENTS, EventKind.CHANGED)
            and e.template_version_id == version
            and (item, True) in e.choices
            for e in events
        ), reason


@PROPS
@given(ledgers(), uses, decision_times, births)
def test_proxy_consent_never_permits_after_representation_ends(
    events: list[ConsentEvent], u: Use, at: dt.datetime, birth: dt.date | None
) -> None:
    own = [e for e in events if e.kind is EventKind.GIVEN and e.at <= at]
    if own:
        return  # the participant's own consent may permit
    d = run(events, u, at, birth)
    if not is_minor(birth, at.date(), 16):
        assert not d.permit
    ends = [e.at for e in events if e.kind is EventKind.PROXY_ENDED and e.at <= at]
    if ends and not any(
        e.kind is EventKind.PROXY_GIVEN and max(ends) <= e.at <= at for e in events
    ):
        assert not d.permit


@PROPS
@given(ledgers(), uses, decision_times, births)
def test_adding_later_events_never_changes_a_past_decision(
    events: list[ConsentEvent], u: Use, at: dt.datetime, birth: dt.date | None
) -> None:
    later = [e for e in events if e.at > at]
    earlier = [e for e in events if e.at <= at]
    assert run(earlier, u, at, birth) == run([*earlier, *later], u, at, birth)


@PROPS
@given(ledgers(), uses, decision_times, births)
def test_participant_decisions_need_an_adult_or_representing_actor(
    events: list[ConsentEvent], u: Use, at: dt.datetime, birth: dt.date | None
) -> None:
    d = run(events, u, at, birth)
    if d.permit and is_minor(birth, at.date(), 16):
        # a minor's data is only used on a proxy's consent
        assert any(
            e.kind is EventKind.PROXY_GIVEN and e.actor.kind is ActorKind.PROXY and e.at <= at
            for e in events
        )


def test_strategy_produces_permits() -> None:
    """Guard against a vacuous property suite: the strategies must reach permits often."""
    found = []

    @settings(max_examples=200, deadline=None, database=None, derandomize=True)
    @given(ledgers(), uses, decision_times, births)
    def probe(events: list[ConsentEvent], u: Use, at: dt.datetime, birth: dt.date | None) -> None:
        found.append(run(events, u, at, birth).permit)

    probe()
    assert sum(found) >= 25, sum(found)
    assert day(0) < day(1)
