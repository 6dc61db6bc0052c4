from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from hvelv.consent.decision import (
    EMPTY_STATE,
    ActiveConsent,
    ConsentState,
    decide,
    evaluate,
    is_minor,
)
from hvelv.consent.diseases import default_hierarchy
from hvelv.consent.duo import Duo, Purpose
from hvelv.consent.model import (
    ConsentEvent,
    Decision,
    EventKind,
    Period,
    ProjectApproval,
    WithdrawalScope,
)
from tests.consent.factories import (
    APPROVAL,
    BREAST,
    CANCER,
    DIABETES,
    HASH_BIO,
    HASH_EN,
    HASH_V2,
    MUM,
    T1D,
    T2D,
    USE,
    Use,
    changed,
    day,
    ev,
    given,
    lookup,
    proxy_given,
    use,
    withdrawn,
)

BORN_2010 = dt.date(2010, 6, 15)  # turns 16 on 2026-06-15
SIXTEENTH = dt.datetime(2026, 6, 15, tzinfo=dt.UTC)


def run(
    events: list[ConsentEvent],
    u: Use = USE,
    at: dt.datetime | None = None,
    *,
    approval: ProjectApproval | None = APPROVAL,
    birth: dt.date | None = None,
) -> Decision:
    return decide(
        events,
        u,
        at if at is not None else day(100),
        approval=approval,
        template_lookup=lookup,
        participant_birth_date=birth,
    )


def test_no_events_means_deny() -> None:
    d = run([])
    assert d == Decision(False, ("consent.none",), (), 0)


def test_simple_permit() -> None:
    d = run([given(1, day(1))])
    assert d == Decision(True, ("permit.main@1/hmb",), (), 1)


def test_events_after_t_are_not_considered() -> None:
    events = [given(1, day(1)), withdrawn(2, day(200))]
    assert run(events, at=day(100)).permit
    assert run(events, at=day(100)).ledger_position == 1
    assert not run(events, at=day(200)).permit
    assert run(events, at=day(200)).ledger_position == 2
    assert not run(events, at=day(0.5)).permit  # before the consent


def test_disease_specific_descendant_is_covered_with_obligations() -> None:
    u = use(purpose=Purpose(Duo.DS, BREAST))
    d = run([given(1, day(1), {"cancer": True})], u)
    assert d.permit
    assert d.reasons == ("permit.main@1/cancer",)
    assert d.obligations == ("COL", "PUB")


def test_disease_specific_ancestor_is_not_covered() -> None:
    template_narrow = Purpose(Duo.DS, CANCER)
    u = use(purpose=Purpose(Duo.DS, "MONDO:0000001"))  # "disease": broader than cancer
    d = run([given(1, day(1), {"cancer": True})], u)
    assert not d.permit
    assert d.reasons == ("consent.not_covered",)
    assert template_narrow.disease == CANCER


def test_obligations_are_the_union_of_permitting_items() -> None:
    u = use(purpose=Purpose(Duo.DS, BREAST))
    d = run([given(1, day(1), {"cancer": True, "hmb": True})], u)
    assert d.permit
    assert d.reasons == ("permit.main@1/hmb", "permit.main@1/cancer")
    assert d.obligations == ("COL", "PUB")


@pytest.mark.parametrize(
    ("approval", "u", "at", "reason"),
    [
        (None, USE, day(100), "approval.missing"),
        (APPROVAL, use(project_id="other"), day(100), "approval.project"),
        (APPROVAL, USE, day(-1), "approval.period"),
        (APPROVAL, USE, day(3650), "approval.period"),
        (
            dataclasses.replace(APPROVAL, purposes=(Purpose(Duo.DS, DIABETES),)),
            USE,
            day(100),
            "approval.purpose",
        ),
        (APPROVAL, use(action="delete"), day(100), "approval.action"),
    ],
)
def test_approval_rules(
    approval: ProjectApproval | None, u: Use, at: dt.datetime, reason: str
) -> None:
    events = [given(1, day(-10) if at < day(0) else day(1))]
    d = run(events, u, at, approval=approval)
    assert not d.permit
    assert reason in d.reasons


def test_approval_purpose_uses_duo_subsumption() -> None:
    approval = dataclasses.replace(APPROVAL, purposes=(Purpose(Duo.DS, CANCER),))
    u = use(purpose=Purpose(Duo.DS, BREAST))
    assert run([given(1, day(1), {"hmb": True})], u, approval=approval).permit


@pytest.mark.parametrize("scope", list(WithdrawalScope))
def test_withdrawal_wins(scope: WithdrawalScope) -> None:
    d = run([given(1, day(1)), withdrawn(2, day(50), scope)])
    assert not d.permit
    assert d.reasons == (f"withdrawn.{scope.value}",)
    assert d.ledger_position == 2


def test_new_consent_after_withdrawal() -> None:
    events = [given(1, day(1)), withdrawn(2, day(50)), given(3, day(60))]
    assert run(events).permit
    assert not run(events, at=day(55)).permit


def test_withdrawal_removes_every_template() -> None:
    events = [
        given(1, day(1)),
        given(2, day(2), {"samples": True}, version="bio@1", text_hash=HASH_BIO),
        withdrawn(3, day(3)),
        given(4, day(4)),
    ]
    samples = use(purpose=Purpose(Duo.DS, T1D), action="store", data_class="biobank_sample")
    assert run(events, samples, at=day(2.5)).reasons == (
        "permit.bio@1/samples",
        "permit.main@1/hmb",
    )
    assert run(events).permit
    assert run(events, samples).reasons == ("permit.main@1/hmb",)


def test_proxy_consent_until_age_of_majority() -> None:
    events = [proxy_given(1, day(1))]
    before = SIXTEENTH - dt.timedelta(microseconds=1)
    approval = dataclasses.replace(APPROVAL, period=Period(day(0), day(5000)))
    assert run(events, at=before, birth=BORN_2010, approval=approval).permit
    d = run(events, at=SIXTEENTH, birth=BORN_2010, approval=approval)
    assert not d.permit
    assert d.reasons == ("consent.proxy_of_age",)
    # the participant's own consent takes over
    own = [*events, given(2, SIXTEENTH + dt.timedelta(days=3))]
    assert run(own, at=SIXTEENTH + dt.timedelta(days=3), birth=BORN_2010, approval=approval).permit


def test_configurable_age_of_majority() -> None:
    events = [proxy_given(1, day(1))]
    at = dt.datetime(2027, 7, 1, tzinfo=dt.UTC)  # 17 years old
    approval = dataclasses.replace(APPROVAL, period=Period(day(0), day(5000)))
    common = {"approval": approval, "template_lookup": lookup, "participant_birth_date": BORN_2010}
    assert not decide(events, USE, at, **common).permit  # type: ignore[arg-type]
    assert decide(events, USE, at, age_of_majority=18, **common).permit  # type: ignore[arg-type]


def test_proxy_ended() -> None:
    events = [proxy_given(1, day(1)), ev(2, EventKind.PROXY_ENDED, day(10), actor=MUM)]
    d = run(events, birth=BORN_2010)
    assert not d.permit
    assert d.reasons == ("consent.proxy_ended",)
    assert run(events, at=day(5), birth=BORN_2010).permit
    # a new representation (e.g. another guardian) after the end
    again = [*events, proxy_given(3, day(20))]
    assert run(again, birth=BORN_2010).permit


def test_proxy_consent_needs_a_minor_with_known_birth_date() -> None:
    d = run([proxy_given(1, day(1))])
    assert not d.permit
    assert d.reasons == ("consent.none", "ignored.1.proxy_not_representing")
    adult = run([proxy_given(1, day(1))], birth=dt.date(1980, 1, 1))
    assert adult.reasons == ("consent.none", "ignored.1.proxy_not_representing")


def test_participant_under_age_cannot_consent_alone() -> None:
    d = run([given(1, day(1))], birth=BORN_2010)
    assert not d.permit
    assert d.reasons == ("consent.none", "ignored.1.participant_under_age")


def test_proxy_withdrawal_is_lifted_by_proxy_consent_but_own_withdrawal_is_not() -> None:
    by_proxy = [proxy_given(1, day(1)), withdrawn(2, day(2), actor=MUM), proxy_given(3, day(3))]
    assert run(by_proxy, birth=BORN_2010).permit
    own = [proxy_given(1, day(1)), withdrawn(2, day(2)), proxy_given(3, day(3))]
    d = run(own, birth=BORN_2010)
    assert not d.permit
    assert d.reasons == ("withdrawn.stop_use",)


def test_deny_wins() -> None:
    share_genome = use(action="share", data_class="genome", requester_institution="Pharma")
    events = [given(1, day(1), {"commercial-partner": True})]
    d = run(events, share_genome)
    assert not d.permit
    assert d.reasons == ("deny.main@1/no-genome-share",)
    share_q = use(action="share", requester_institution="Pharma", purpose=Purpose(Duo.GRU))
    d = run(events, share_q)
    assert d == Decision(True, ("permit.main@1/commercial-partner",), ("RTN",), 1)
    d = run(events, dataclasses.replace(share_q, requester_institution="UiO"))
    assert d.reasons == ("modifier.IS.main@1/commercial-partner",)


def test_deny_wins_across_templates() -> None:
    events = [
        given(1, day(1)),
        given(2, day(2), {"samples": True}, version="bio@1", text_hash=HASH_BIO),
    ]
    t2d = use(purpose=Purpose(Duo.DS, T2D))
    d = run(events, t2d)
    assert not d.permit
    assert d.reasons == ("deny.bio@1/no-t2d",)
    # a request for all diabetes research overlaps the denied type 2 diabetes
    assert run(events, use(purpose=Purpose(Duo.DS, DIABETES))).reasons == ("deny.bio@1/no-t2d",)
    samples = use(purpose=Purpose(Duo.DS, T1D), data_class="biobank_sample")
    assert run(events, samples).reasons == ("permit.bio@1/samples", "permit.main@1/hmb")
    only_bio = [given(1, day(1), {"ancestry": True}), events[1]]
    d = run(only_bio, dataclasses.replace(samples, commercial=True))
    assert d.reasons == ("modifier.NPUNCU.bio@1/samples",)


def test_declined_item_and_poa() -> None:
    poa = use(purpose=Purpose(Duo.POA))
    assert not run([given(1, day(1), {"hmb": True, "ancestry": False})], poa).permit
    assert run([given(1, day(1), {"ancestry": True})], poa).permit
    # HMB does not cover ancestry research
    assert not run([given(1, day(1), {"hmb": True})], poa).permit


def test_unknown_items_in_choices_are_ignored() -> None:
    d = run([given(1, day(1), {"nonexistent": True, "no-genome-share": True})])
    assert d.reasons == ("consent.not_covered",)


def test_changed_events() -> None:
    base = [given(1, day(1), {"hmb": True})]
    assert not run([*base, changed(2, day(2), {"hmb": False})]).permit
    regrant = [*base, changed(2, day(2), {"hmb": False}), changed(3, day(3), {"hmb": True})]
    assert run(regrant).permit
    assert run(regrant, at=day(2.5)).reasons[0] == "consent.not_covered"
    poa = use(purpose=Purpose(Duo.POA))
    assert run([*base, changed(2, day(2), {"ancestry": True})], poa).permit


def test_changed_grant_needs_the_version_and_text_in_force() -> None:
    base = [given(1, day(1), {"hmb": False})]
    wrong_version = [*base, changed(2, day(2), {"hmb": True}, version="main@2", text_hash=HASH_V2)]
    d = run(wrong_version)
    assert not d.permit
    assert "ignored.2.grant_refused" in d.reasons
    wrong_hash = [*base, changed(2, day(2), {"hmb": True}, text_hash=HASH_V2)]
    assert "ignored.2.grant_refused" in run(wrong_hash).reasons
    other_language = [*base, changed(2, day(2), {"hmb": True}, text_hash=HASH_EN)]
    assert run(other_language).permit


def test_changed_decline_applies_even_with_another_version() -> None:
    events = [given(1, day(1)), changed(2, day(2), {"hmb": False}, version="main@2", text_hash="x")]
    assert not run(events).permit


def test_changed_without_consent_or_template() -> None:
    d = run([changed(1, day(1), {"hmb": True})])
    assert d.reasons == ("consent.none", "ignored.1.no_consent_to_change")
    d = run([given(1, day(1)), changed(2, day(2), {"hmb": False}, version="nope@1")])
    assert d.permit  # the unknown change is ignored
    d = run([changed(1, day(1), {"hmb": True}, version="nope@1")])
    assert d.reasons == ("consent.none", "ignored.1.unknown_template")


def test_proxy_changes() -> None:
    base = [proxy_given(1, day(1), {"hmb": False})]
    grant = [*base, changed(2, day(2), {"hmb": True}, actor=MUM)]
    assert run(grant, birth=BORN_2010).permit
    ended = [
        *base,
        ev(2, EventKind.PROXY_ENDED, day(2)),
        changed(3, day(3), {"hmb": True}, actor=MUM),
    ]
    d = run(ended, birth=BORN_2010)
    assert "ignored.3.grant_refused" in d.reasons
    # a minor may not widen the proxy's consent themself
    child = [*base, changed(2, day(2), {"hmb": True})]
    assert "ignored.2.grant_refused" in run(child, birth=BORN_2010).reasons
    # but any narrowing is applied
    narrow = [proxy_given(1, day(1)), changed(2, day(2), {"hmb": False})]
    assert run(narrow, birth=BORN_2010).reasons[0] == "consent.not_covered"


def test_given_with_unknown_template_or_wrong_text() -> None:
    d = run([given(1, day(1), version="nope@1")])
    assert d.reasons == ("consent.none", "ignored.1.unknown_template")
    d = run([given(1, day(1), text_hash="sha256:something-else")])
    assert d.reasons == ("consent.none", "ignored.1.text_hash")


def test_new_version_replaces_old_consent() -> None:
    events = [
        given(1, day(1), {"hmb": True}),
        given(2, day(2), {"recontact": True}, version="main@2", text_hash=HASH_V2),
    ]
    assert not run(events).permit  # hmb not chosen in v2
    recontact = use(action="recontact", purpose=Purpose(Duo.GRU))
    assert run(events, recontact).permit
    # the item's own period
    d = run(events, recontact, at=day(400))
    assert d.reasons == ("consent.not_covered",)


def test_expired() -> None:
    both = [
        given(1, day(1), {"ancestry": True}),
        given(2, day(2), {"samples": True}, version="bio@1", text_hash=HASH_BIO),
    ]
    samples = use(purpose=Purpose(Duo.DS, T1D), data_class="biobank_sample")
    poa = use(purpose=Purpose(Duo.POA))
    assert run(both, samples).permit
    one = [*both, ev(3, EventKind.EXPIRED, day(3), version="bio@1")]
    assert run(one, poa).permit
    assert not run(one, samples).permit
    for version in (None, "gone@9"):
        every = [*both, ev(3, EventKind.EXPIRED, day(3), version=version)]
        assert run(every, poa).reasons == ("consent.none",)
        assert not run(every, samples).permit


def test_same_time_events_are_ordered_by_seq() -> None:
    events = [withdrawn(2, day(1)), given(1, day(1))]
    assert not run(events).permit
    events = [withdrawn(1, day(1)), given(2, day(1))]
    assert run(events).permit


def test_clinical_care_needs_cc() -> None:
    d = run([given(1, day(1))], use(clinical_care=True))
    assert d.reasons == ("modifier.CC.main@1/hmb",)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="aware"):
        run([], at=dt.datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="one participant"):
        run([given(1, day(1)), given(2, day(2), participant="p2")])
    with pytest.raises(ValueError, match="seq"):
        run([given(1, day(1)), given(1, day(2))])


def test_evaluate_fails_closed_when_a_template_disappears() -> None:
    state = ConsentState((ActiveConsent("main", "main@1", False, False, frozenset({"hmb"})),))
    out = evaluate(
        state,
        USE,
        day(10),
        approval=APPROVAL,
        template_lookup=lambda _: None,
        minor_at=False,
        diseases=default_hierarchy(),
    )
    assert not out.permit
    assert out.reasons == ("consent.template_unknown.main@1", "consent.not_covered")
    empty = evaluate(
        EMPTY_STATE,
        USE,
        day(10),
        approval=APPROVAL,
        template_lookup=lookup,
        minor_at=False,
        diseases=default_hierarchy(),
    )
    assert empty.reasons == ("consent.none",)


def test_is_minor() -> None:
    assert is_minor(BORN_2010, dt.date(2026, 6, 14), 16)
    assert not is_minor(BORN_2010, dt.date(2026, 6, 15), 16)
    assert not is_minor(None, dt.date(2020, 1, 1), 16)
