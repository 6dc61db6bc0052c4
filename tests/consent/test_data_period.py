"""Item data periods (FHIR ``Consent.provision.dataPeriod``): modelled on permit items, returned
with a permit as ``data_periods`` (never deciding permit or deny), stored, and carried through
FHIR R5 and R4."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from fhir.resources.consent import Consent as ConsentR5
from fhir.resources.R4B.consent import Consent as ConsentR4
from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.consent.decision import decide
from hvelv.consent.duo import Duo, Purpose
from hvelv.consent.fhir import EXT, UnsupportedFhirConsent, from_fhir, to_fhir_r4, to_fhir_r5
from hvelv.consent.mapping import provision_from_dict, provision_to_dict
from hvelv.consent.model import (
    ConsentEvent,
    Decision,
    Effect,
    Period,
    Provision,
    Template,
    Use,
    merge_periods,
)
from tests.consent import factories as f
from tests.consent.conftest import HMB_USE, ITEMS, TEXTS, Consent, publish_template
from tests.consent.factories import APPROVAL, TEMPLATES, day, use
from tests.consent.factories import given as given_event
from tests.consent.strategies import USES, births, decision_times, ledgers, uses

PROPS = settings(max_examples=150, deadline=None)


def p(start: float, end: float | None = None) -> Period:
    return Period(day(start), None if end is None else day(end))


@pytest.mark.parametrize(
    ("periods", "merged"),
    [
        ([], ()),
        ([p(0, 1)], (p(0, 1),)),
        ([p(5, 6), p(0, 1)], (p(0, 1), p(5, 6))),  # sorted, kept apart
        ([p(0, 2), p(1, 3)], (p(0, 3),)),  # overlapping
        ([p(0, 1), p(1, 2)], (p(0, 2),)),  # adjacent (half-open)
        ([p(0, 10), p(2, 3)], (p(0, 10),)),  # contained
        ([p(0, 1), p(0, 1)], (p(0, 1),)),  # equal
        ([p(3), p(0, 1), p(5, 9)], (p(0, 1), p(3))),  # open-ended absorbs what follows
        ([p(0, 4), p(2)], (p(0),)),
    ],
)
def test_merge_periods(periods: list[Period], merged: tuple[Period, ...]) -> None:
    assert merge_periods(periods) == merged


def test_deny_items_carry_no_data_period() -> None:
    with pytest.raises(ValueError, match="no data period"):
        Provision("x", Effect.DENY, Purpose(Duo.GRU), data_period=p(0, 1))


def test_stored_items_keep_their_data_period_and_old_items_have_none() -> None:
    item = dataclasses.replace(f.MAIN_V1.provisions[1], data_period=p(-10, 0))
    stored = provision_to_dict(item)
    assert stored["data_period"] == {
        "start": "2023-12-22T00:00:00+00:00",
        "end": "2024-01-01T00:00:00+00:00",
    }
    assert provision_from_dict(stored) == item
    del stored["data_period"]  # a template published before data periods existed
    assert provision_from_dict(stored).data_period is None


def _run(
    events: list[ConsentEvent], u: Use, at: dt.datetime, templates: dict[str, Template]
) -> Decision:
    return decide(events, u, at, approval=APPROVAL, template_lookup=templates.get)


def test_a_permit_returns_the_data_period_and_a_deny_none() -> None:
    events = [given_event(1, day(1), {"hmb": True, "cancer": True})]
    cancer = use(purpose=Purpose(Duo.DS, f.BREAST))
    d = _run(events, cancer, day(2), dict(TEMPLATES))
    # HMB covers the cancer request too and has no data period: data of any time
    assert d.permit
    assert d.data_periods is None
    only_cancer = [given_event(1, day(1), {"cancer": True})]
    d = _run(only_cancer, cancer, day(2), dict(TEMPLATES))
    assert d.permit
    assert d.data_periods == (f.DATA_FROM_2014,)
    assert d.obligations == ("COL", "PUB")
    denied = _run(only_cancer, use(), day(2), dict(TEMPLATES))
    assert not denied.permit
    assert denied.data_periods is None


def test_the_union_over_permitting_items_of_several_templates() -> None:
    templates = dict(TEMPLATES)
    main = templates["main@1"]
    hmb = dataclasses.replace(main.provisions[0], data_period=p(100, 200))
    templates["main@1"] = dataclasses.replace(main, provisions=(hmb, *main.provisions[1:]))
    bio = templates["bio@1"]
    samples = dataclasses.replace(bio.provisions[0], data_period=p(150, 300))
    templates["bio@1"] = dataclasses.replace(bio, provisions=(samples, *bio.provisions[1:]))
    events = [
        given_event(1, day(1), {"hmb": True, "cancer": True}),
        given_event(2, day(1), {"samples": True}, version="bio@1", text_hash=f.HASH_BIO),
    ]
    t1d = use(purpose=Purpose(Duo.DS, f.T1D), data_class="biobank_sample", action="store")
    d = _run(events, t1d, day(5), templates)
    assert d.reasons == ("permit.bio@1/samples", "permit.main@1/hmb")
    assert d.data_periods == (p(100, 300),)


# -- properties ----------------------------------------------------------------------------

PERMIT_ITEMS = sorted(
    {
        (v, x.item_id)
        for v, t in TEMPLATES.items()
        for x in t.provisions
        if x.effect is Effect.PERMIT
    }
)
data_periods = st.one_of(
    st.none(),
    st.builds(
        lambda start, length: p(start, None if length is None else start + length),
        st.integers(-400, 400),
        st.one_of(st.none(), st.integers(1, 300)),
    ),
)


def _with_data_periods(chosen: dict[tuple[str, str], Period | None]) -> dict[str, Template]:
    templates = {}
    for version, template in TEMPLATES.items():
        provisions = tuple(
            dataclasses.replace(x, data_period=chosen.get((version, x.item_id)))
            if x.effect is Effect.PERMIT
            else x
            for x in template.provisions
        )
        templates[version] = dataclasses.replace(template, provisions=provisions)
    return templates


def _covered(periods: tuple[Period, ...] | None, at: dt.datetime) -> bool:
    return periods is None or any(x.contains(at) for x in periods)


@PROPS
@given(
    ledgers(),
    uses,
    decision_times,
    births,
    st.fixed_dictionaries(dict.fromkeys(PERMIT_ITEMS, data_periods)),
)
def test_data_periods_constrain_a_permit_and_never_decide(
    events: list[ConsentEvent],
    u: Use,
    at: dt.datetime,
    birth: dt.date | None,
    chosen: dict[tuple[str, str], Period | None],
) -> None:
    templates = _with_data_periods(chosen)
    without = _with_data_periods({})
    d = decide(
        events,
        u,
        at,
        approval=APPROVAL,
        template_lookup=templates.get,
        participant_birth_date=birth,
    )
    plain = decide(
        events,
        u,
        at,
        approval=APPROVAL,
        template_lookup=without.get,
        participant_birth_date=birth,
    )
    # the data period never changes permit, reasons, obligations or ledger position
    assert dataclasses.replace(d, data_periods=None) == plain
    assert plain.data_periods is None
    if not d.permit:
        assert d.data_periods is None
        return
    permitting = [
        chosen[(version, item)]
        for version, item in (r.removeprefix("permit.").split("/") for r in d.reasons)
    ]
    if any(x is None for x in permitting):
        assert d.data_periods is None
        return
    assert d.data_periods is not None
    # sorted, disjoint, not adjacent (merged)
    for a, b in zip(d.data_periods, d.data_periods[1:], strict=False):
        assert a.end is not None
        assert a.end < b.start
    # the union: a moment is covered exactly when some permitting item's data period has it
    bounds = {x.start for x in permitting if x} | {x.end for x in permitting if x and x.end}
    probes = {t + delta for t in bounds for delta in (dt.timedelta(0), -dt.timedelta(seconds=1))}
    probes |= {day(-1000), day(1000), at}
    for moment in probes:
        assert _covered(d.data_periods, moment) == any(
            x is not None and x.contains(moment) for x in permitting
        ), moment


def test_every_permit_item_of_the_uses_can_be_reached() -> None:
    """The property above meets permits of every template (a guard on the strategies)."""
    seen: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(ledgers(), decision_times)
    def collect(events: list[ConsentEvent], at: dt.datetime) -> None:
        for u in USES:
            d = _run(events, u, at, dict(TEMPLATES))
            if d.permit:
                seen.update(r.split("/")[0] for r in d.reasons)

    collect()
    assert seen == {"permit.main@1", "permit.main@2", "permit.bio@1"}


# -- FHIR ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["R5", "R4"])
def test_fhir_carries_the_data_period_both_ways(version: str) -> None:
    events = [
        given_event(1, day(1), {"cancer": True}),
        given_event(2, day(1), {"samples": True}, version="bio@1", text_hash=f.HASH_BIO),
    ]
    export = to_fhir_r5 if version == "R5" else to_fhir_r4
    model = ConsentR5 if version == "R5" else ConsentR4
    for template, item, expected in (
        (f.MAIN_V1, "cancer", {"start": "2014-01-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"}),
        (f.BIOBANK_V1, "samples", {"start": "2023-01-01T00:00:00Z"}),
    ):
        doc = export("Patient/p1", template, events, day(2), template_lookup=f.lookup)
        model.model_validate(doc)
        provisions = doc["provision"] if version == "R5" else doc["provision"]["provision"]
        (permit,) = [
            x for x in provisions if {"url": EXT.ITEM, "valueString": item} in x["extension"]
        ]
        assert permit["dataPeriod"] == expected
        imported = from_fhir(doc, version=version, participant="p1")  # type: ignore[arg-type]
        got = imported.template.provision(item)
        assert got is not None
        original = template.provision(item)
        assert original is not None
        assert got.data_period == original.data_period


@pytest.mark.parametrize("version", ["R5", "R4"])
def test_fhir_deny_provisions_with_a_data_period_are_refused(version: str) -> None:
    events = [given_event(1, day(1), {"hmb": True})]
    export = to_fhir_r5 if version == "R5" else to_fhir_r4
    doc = export("Patient/p1", f.MAIN_V1, events, day(2), template_lookup=f.lookup)
    first = doc["provision"][0] if version == "R5" else doc["provision"]["provision"][0]
    (deny,) = first["provision"]
    deny["dataPeriod"] = {"start": "2020-01-01T00:00:00Z"}
    with pytest.raises(UnsupportedFhirConsent, match="no data period"):
        from_fhir(doc, version=version, participant="p1")  # type: ignore[arg-type]


# -- through the API -----------------------------------------------------------------------


def test_templates_decisions_and_the_participant_listing_carry_the_data_period(
    consent: Consent,
) -> None:
    dm = consent.dm
    bad = [dict(ITEMS[2], data_period={"start": "2020-01-01T00:00:00Z"})]
    refused = consent.client.post(
        f"{consent.base}/studies/1/templates",
        json={"title": "Bad", "texts": TEXTS, "items": bad},
        headers=dm,
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "invalid_template"
    assert "no data period" in refused.text

    period = {"start": "2014-01-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"}
    items = [ITEMS[0], dict(ITEMS[1], data_period=period), ITEMS[2]]
    published = publish_template(consent.client, consent.pid, dm, items)
    stored = {i["item_id"]: i for i in published["items"]}
    assert stored["cancer"]["data_period"] == {
        "start": "2014-01-01T00:00:00+00:00",
        "end": "2024-01-01T00:00:00+00:00",
    }
    assert stored["hmb"]["data_period"] is None
    mine = dataclasses.replace(
        consent, version_id=published["version_id"], template_id=published["template_id"]
    )
    pseudonym = mine.enrol()
    me = mine.participant(pseudonym)
    assert mine.give(me, hmb=True, cancer=True).status_code == 201

    cancer = dict(HMB_USE, purpose={"code": "DS", "disease": "MONDO:0007254"})
    decided = mine.decide(pseudonym, cancer)
    assert decided["permit"] is True
    assert decided["data_periods"] is None  # HMB covers it too, for data of any time
    assert mine.give(me, hmb=False, cancer=True).status_code == 201
    decided = mine.decide(pseudonym, cancer)
    assert decided["permit"] is True
    assert decided["reasons"] == [f"permit.{published['version_id']}/cancer"]
    assert [
        (dt.datetime.fromisoformat(x["start"]), dt.datetime.fromisoformat(x["end"]))
        for x in decided["data_periods"]
    ] == [(dt.datetime(2014, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 1, 1, tzinfo=dt.UTC))]
    denied = mine.decide(pseudonym)
    assert denied["permit"] is False
    assert denied["data_periods"] is None

    listing = mine.client.get("/v1/participant/consents", headers=me)
    assert listing.status_code == 200, listing.text
    (held,) = [c for c in listing.json()["consents"] if c["version_id"] == mine.version_id]
    shown = {i["item_id"]: i for i in held["items"]}
    assert dt.datetime.fromisoformat(shown["cancer"]["data_period"]["start"]) == dt.datetime(
        2014, 1, 1, tzinfo=dt.UTC
    )
    assert shown["hmb"]["data_period"] is None
    assert shown["hmb"]["period"] is None
