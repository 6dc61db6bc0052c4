"""FHIR Consent export/import: shape, validation with fhir.resources, strict import, and the
round trip export → validate → import → same decisions."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import re
from typing import Any

import pytest
from fhir.resources.consent import Consent as ConsentR5
from fhir.resources.R4B.consent import Consent as ConsentR4
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvelv.consent.decision import decide
from hvelv.consent.duo import Duo, Modifiers, Purpose
from hvelv.consent.fhir import (
    DUO_SYSTEM,
    EXT,
    MONDO_SYSTEM,
    FhirVersion,
    InvalidFhirConsent,
    UnsupportedFhirConsent,
    from_fhir,
    to_fhir_r4,
    to_fhir_r5,
    validate_fhir,
)
from hvelv.consent.model import (
    ConsentEvent,
    Effect,
    EventKind,
    Period,
    Provision,
    Template,
    WithdrawalScope,
)
from tests.consent import factories as f
from tests.consent.strategies import USES, births, decision_times, ledgers

REF = "Patient/pseudo-7f3a"
EXPORTERS = {"R5": to_fhir_r5, "R4": to_fhir_r4}
MODELS = {"R5": ConsentR5, "R4": ConsentR4}

RICH = Template(
    version_id="rich@1",
    template_id="rich",
    provisions=(
        Provision(
            "ts-gs",
            Effect.PERMIT,
            Purpose(Duo.DS, f.BREAST),
            frozenset({"analyse"}),
            frozenset({"questionnaire", "registry"}),
            period=Period(f.day(0), f.day(300)),
            modifiers=Modifiers(
                frozenset({Duo.TS, Duo.GS, Duo.US, Duo.PS, Duo.NPUNCU, Duo.PUB}),
                time_limit=f.day(250),
                regions=frozenset({"NO", "SE"}),
                users=frozenset({"u-1"}),
                projects=frozenset({"proj-1"}),
            ),
        ),
        Provision("nothing", Effect.PERMIT, Purpose(Duo.GRU), frozenset(), None),
        Provision("no-poa", Effect.DENY, Purpose(Duo.POA), None, frozenset({"genome"})),
    ),
    text_hashes=frozenset({"sha256:rich"}),
)
ALL = {**f.TEMPLATES, RICH.version_id: RICH}


def export(version: FhirVersion, *args: Any, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("template_lookup", ALL.get)
    return EXPORTERS[version](REF, *args, **kwargs)


@pytest.mark.parametrize("version", ["R5", "R4"])
def test_active_export_shape_and_validation(version: FhirVersion) -> None:
    events = [
        f.given(1, f.day(1), {"hmb": True, "cancer": True, "ancestry": False}),
    ]
    doc = export(version, f.MAIN_V1, events, f.day(5), controller_name="OUS", resource_id="c1")
    consent = MODELS[version].model_validate(doc)
    assert consent.status == "active"
    assert doc["id"] == "c1"
    if version == "R5":
        assert doc["decision"] == "deny"
        assert doc["subject"] == {"reference": REF}
        assert doc["controller"] == [{"type": "Organization", "display": "OUS"}]
        firsts = doc["provision"]
    else:
        assert doc["scope"]["coding"][0]["code"] == "research"
        assert doc["patient"] == {"reference": REF}
        assert doc["provision"]["type"] == "deny"
        firsts = doc["provision"]["provision"]
        assert {p["type"] for p in firsts} == {"permit"}
        assert {c["type"] for p in firsts for c in p["provision"]} == {"deny"}
    purposes = [p["purpose"][0] for p in firsts]
    assert [p["code"] for p in purposes] == ["DUO_0000006", "DUO_0000007"]
    assert {p["system"] for p in purposes} == {DUO_SYSTEM}
    cancer = firsts[1]
    disease = next(e for e in cancer["extension"] if e["url"] == EXT.DISEASE)
    assert disease["valueCoding"] == {
        "system": MONDO_SYSTEM,
        "code": f.CANCER,
        "display": "cancer",
    }
    # the deny item is nested under every permit provision
    for p in firsts:
        nested = p["provision"]
        assert [e["valueString"] for n in nested for e in n["extension"]] == ["no-genome-share"]


@pytest.mark.parametrize("version", ["R5", "R4"])
def test_modifiers_periods_and_empty_sets_survive(version: FhirVersion) -> None:
    events = [
        ConsentEvent(
            1,
            "p1",
            EventKind.GIVEN,
            f.day(1),
            f.ME,
            "rich@1",
            "sha256:rich",
            (("ts-gs", True), ("nothing", True)),
        )
    ]
    doc = export(version, RICH, events, f.day(2))
    validate_fhir(doc, version)
    imported = from_fhir(doc)
    assert imported.version == version
    assert imported.participant_ref == REF
    assert imported.template.version_id == "rich@1"
    assert set(imported.template.provisions) == set(RICH.provisions)


@pytest.mark.parametrize("version", ["R5", "R4"])
def test_withdrawal_exports_inactive_or_rejected_and_imports_as_withdrawn(
    version: FhirVersion,
) -> None:
    events = [
        f.given(1, f.day(1)),
        f.withdrawn(2, f.day(3), WithdrawalScope.DELETE_DATA),
    ]
    doc = export(version, f.MAIN_V1, events, f.day(4))
    validate_fhir(doc, version)
    assert doc["status"] == ("inactive" if version == "R5" else "rejected")
    imported = from_fhir(doc, participant="p1")
    assert [(e.kind, e.scope, e.at) for e in imported.events] == [
        (EventKind.WITHDRAWN, WithdrawalScope.DELETE_DATA, f.day(3))
    ]


def test_proxy_consent_is_a_related_person_and_ends() -> None:
    events = [
        f.proxy_given(1, f.day(1), {"hmb": True}),
        f.ev(2, EventKind.PROXY_ENDED, f.day(9), actor=f.MUM),
    ]
    birth = dt.date(2010, 1, 1)
    doc = export("R5", f.MAIN_V1, events, f.day(10), participant_birth_date=birth)
    validate_fhir(doc)
    assert doc["status"] == "inactive"
    assert doc["grantor"][0]["type"] == "RelatedPerson"
    kinds = [e.kind for e in from_fhir(doc).events]
    assert kinds == [EventKind.PROXY_GIVEN, EventKind.PROXY_ENDED]


def test_consent_in_force_is_the_current_version() -> None:
    events = [f.given(1, f.day(1)), f.given(2, f.day(2), version="main@2", text_hash=f.HASH_V2)]
    doc = export("R5", f.MAIN_V1, events, f.day(3))
    assert from_fhir(doc).template.version_id == "main@2"
    earlier = export("R5", f.MAIN_V1, events, f.day(1))
    assert from_fhir(earlier).template.version_id == "main@1"


def test_no_consent_imports_as_expired() -> None:
    doc = export("R5", f.MAIN_V1, [], f.day(3))
    validate_fhir(doc)
    assert doc["status"] == "inactive"
    assert "provision" not in doc
    assert [e.kind for e in from_fhir(doc).events] == [EventKind.EXPIRED]


def foreign_r4() -> dict[str, Any]:
    """A hand-written R4 consent from another system (no Hvelv extensions)."""
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}],
        "patient": {"reference": "Patient/x"},
        "dateTime": "2024-01-05T10:00:00+01:00",
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "deny",
            "provision": [
                {"type": "permit", "purpose": [{"system": DUO_SYSTEM, "code": "DUO_0000006"}]}
            ],
        },
    }


def test_foreign_document_imports_with_generated_ids() -> None:
    imported = from_fhir(foreign_r4())
    assert imported.version == "R4"
    assert imported.template.template_id == "fhir-import"
    (event,) = imported.events
    assert event.kind is EventKind.GIVEN
    assert event.at == dt.datetime(2024, 1, 5, 9, tzinfo=dt.UTC)
    lookup = {imported.template.version_id: imported.template}.get
    decision = decide(imported.events, f.USE, f.day(6), approval=f.APPROVAL, template_lookup=lookup)
    assert decision.permit
    poa = decide(
        imported.events,
        f.use(purpose=Purpose(Duo.POA)),
        f.day(6),
        approval=f.APPROVAL,
        template_lookup=lookup,
    )
    assert not poa.permit


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "error", "needle"),
    [
        (("resourceType",), "Patient", InvalidFhirConsent, "resourceType"),
        (("dateTime",), "yesterday", InvalidFhirConsent, "dateTime"),
        (("scope",), "research", InvalidFhirConsent, "scope"),
        (("surprise",), 1, InvalidFhirConsent, "surprise"),
        (("status",), "draft", UnsupportedFhirConsent, "status 'draft'"),
        (("patient",), {"display": "no ref"}, UnsupportedFhirConsent, "reference"),
        (
            ("provision", "provision", 0, "purpose"),
            [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}],
            UnsupportedFhirConsent,
            "not a DUO code",
        ),
        (
            ("provision", "provision", 0, "purpose"),
            [{"system": DUO_SYSTEM, "code": "DUO_0000007"}],
            UnsupportedFhirConsent,
            "disease",
        ),
        (
            ("provision", "provision", 0, "actor"),
            [{"role": {"text": "x"}, "reference": {"reference": "Organization/o"}}],
            UnsupportedFhirConsent,
            "['actor']",
        ),
        (
            ("provision", "provision", 0, "action"),
            [{"coding": [{"system": "http://x/consentaction", "code": "access"}]}],
            UnsupportedFhirConsent,
            "access",
        ),
        (
            ("provision", "provision", 0, "type"),
            "maybe",
            UnsupportedFhirConsent,
            "type must be permit or deny",
        ),
        (
            ("provision", "type"),
            "permit",
            UnsupportedFhirConsent,
            "type must be deny",
        ),
        (
            ("provision", "provision", 0, "modifierExtension"),
            [{"url": "http://x/y", "valueBoolean": True}],
            UnsupportedFhirConsent,
            "modifierExtension",
        ),
        (
            ("provision", "provision", 0, "provision"),
            [{"type": "deny", "provision": [{"type": "permit"}]}],
            UnsupportedFhirConsent,
            "three deep",
        ),
    ],
)
def test_invalid_or_unsupported_documents_are_refused(
    path: tuple[Any, ...], value: Any, error: type[Exception], needle: str
) -> None:
    doc = _set(foreign_r4(), path, value)
    with pytest.raises(error, match=re.escape(needle)) as info:
        from_fhir(doc)
    assert isinstance(info.value, ValueError)


def test_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidFhirConsent, match="JSON object"):
        from_fhir([])  # type: ignore[arg-type]


def _merged_import(
    version: FhirVersion, events: list[ConsentEvent], at: dt.datetime, birth: dt.date | None
) -> tuple[list[ConsentEvent], dict[str, Template]]:
    """Export every template the participant may hold a consent to, validate each document,
    import them and merge the events into one ledger."""
    bodies: list[ConsentEvent] = []
    templates: dict[str, Template] = {}
    for template in (f.MAIN_V1, f.BIOBANK_V1):
        doc = export(version, template, events, at, participant_birth_date=birth)
        MODELS[version].model_validate(doc)
        imported = from_fhir(doc, version=version, participant="p1")
        templates[imported.template.version_id] = imported.template
        bodies.extend(imported.events)
    ordered = sorted(bodies, key=lambda e: (e.at, e.seq))
    return [dataclasses.replace(e, seq=i) for i, e in enumerate(ordered, 1)], templates


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(["R5", "R4"]),
    events=ledgers(),
    at=decision_times,
    birth=births,
)
def test_round_trip_gives_the_same_decisions(
    version: FhirVersion, events: list[ConsentEvent], at: dt.datetime, birth: dt.date | None
) -> None:
    imported, templates = _merged_import(version, events, at, birth)
    for use in USES:
        before = decide(
            events,
            use,
            at,
            approval=f.APPROVAL,
            template_lookup=f.lookup,
            participant_birth_date=birth,
        )
        after = decide(
            imported,
            use,
            at,
            approval=f.APPROVAL,
            template_lookup=templates.get,
            participant_birth_date=birth,
        )
        assert (after.permit, after.obligations, after.data_periods) == (
            before.permit,
            before.obligations,
            before.data_periods,
        ), use
        if before.permit:
            assert after.reasons == before.reasons


@pytest.mark.parametrize("version", ["R5", "R4"])
def test_a_national_id_is_never_the_participant_reference(version: FhirVersion) -> None:
    with pytest.raises(ValueError, match="pseudonym"):
        EXPORTERS[version]("Patient/15108695088", f.MAIN_V1, [], f.day(1))
    with pytest.raises(ValueError, match="pseudonym"):
        EXPORTERS[version]("151086 95088", f.MAIN_V1, [], f.day(1))


@given(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32))
def test_any_pseudonym_is_a_valid_participant_reference(pseudonym: str) -> None:
    # A hex pseudonym can hold eleven digits in a row; it is still not a national id.
    for version in ("R5", "R4"):
        doc = EXPORTERS[version](f"Patient/{pseudonym}", f.MAIN_V1, [], f.day(1))
        assert pseudonym in json.dumps(doc)


def test_a_pseudonym_with_eleven_digits_in_a_row_is_accepted() -> None:
    doc = EXPORTERS["R5"]("Patient/ab15108695088cd15108695088ef1234", f.MAIN_V1, [], f.day(1))
    assert doc["subject"] == {"reference": "Patient/ab15108695088cd15108695088ef1234"}


def test_r5_base_permit_from_elsewhere_becomes_nres_with_denies() -> None:
    doc = {
        "resourceType": "Consent",
        "status": "active",
        "subject": {"reference": "Patient/x"},
        "date": "2024-01-02",
        "decision": "permit",
        "provision": [{"purpose": [{"system": DUO_SYSTEM, "code": "DUO_0000011"}]}],
    }
    imported = from_fhir(doc)
    assert imported.version == "R5"
    effects = {p.item_id: (p.effect, p.purpose.code) for p in imported.template.provisions}
    assert effects == {
        "provision[0]": (Effect.DENY, Duo.POA),
        "base-permit": (Effect.PERMIT, Duo.NRES),
    }
    lookup = {imported.template.version_id: imported.template}.get
    hmb = decide(imported.events, f.USE, f.day(3), approval=f.APPROVAL, template_lookup=lookup)
    assert hmb.permit
    poa = decide(
        imported.events,
        f.use(purpose=Purpose(Duo.POA)),
        f.day(3),
        approval=f.APPROVAL,
        template_lookup=lookup,
    )
    assert not poa.permit
    with pytest.raises(UnsupportedFhirConsent, match="decision"):
        from_fhir({k: v for k, v in doc.items() if k != "decision"})
