"""FHIR Consent through the HTTP API: export (validated) → import into another participant and
another project → the same decisions; invalid documents and unknown participants refused."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest

from hvelv.consent.fhir import validate_fhir
from tests.consent.conftest import HMB_USE, Consent, publish_template
from tests.support.people import Person

USES: list[dict[str, Any]] = [
    HMB_USE,
    {**HMB_USE, "action": "store"},
    {**HMB_USE, "purpose": {"code": "DS", "disease": "MONDO:0007254"}},  # breast cancer
    {**HMB_USE, "purpose": {"code": "DS", "disease": "MONDO:0007254"}, "action": "store"},
    {**HMB_USE, "action": "share", "data_class": "genome"},
    {**HMB_USE, "purpose": {"code": "GRU"}},
]


def _decide(consent: Consent, base: str, who: Person, pseudonym: str, at: str) -> list[Any]:
    out = []
    for use in USES:
        r = consent.client.post(
            f"{base}/decisions",
            json={"participant": pseudonym, "use": use, "at": at},
            headers=who.headers,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        out.append((body["permit"], sorted(body["obligations"])))
    return out


def _export(consent: Consent, base: str, headers: dict[str, str], pseudonym: str, **q: str) -> Any:
    r = consent.client.get(f"{base}/participants/{pseudonym}/fhir", params=q, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    return r.json()


@pytest.mark.parametrize("version", ["R5", "R4"])
def test_export_import_round_trip_gives_the_same_decisions(consent: Consent, version: str) -> None:
    client, dm = consent.client, consent.dm
    alice = consent.enrol()
    me = consent.participant(alice)
    assert consent.give(me, hmb=True, cancer=False).status_code == 201
    flip = client.post(
        f"/v1/participant/consents/{consent.template_id}/items/cancer",
        json={"granted": True},
        headers=me,
    )
    assert flip.status_code == 200
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
    bundle = _export(consent, consent.base, dm, alice, version=version, at=at)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["total"] == 1
    (doc,) = [e["resource"] for e in bundle["entry"]]
    assert validate_fhir(doc, version) == version  # type: ignore[arg-type]
    assert doc["resourceType"] == "Consent"
    assert f"Patient/{alice}" in json.dumps(doc)
    expected = _decide(consent, consent.base, consent.people["member"], alice, at)
    assert expected[0] == (True, [])  # HMB analyse permitted
    assert expected[2] == (True, ["PUB"])  # the cancer item, with its obligation

    # into another participant of the same project
    bob = consent.enrol(email="ola@example.org")
    imported = client.post(
        f"{consent.base}/fhir", params={"participant": bob}, json=doc, headers=dm
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["participants"] == [bob]
    assert [e["channel"] for e in imported.json()["events"]] == ["import"]
    assert _decide(consent, consent.base, consent.people["member"], bob, at) == expected

    # into another project that published the same template (its own template id)
    owner = consent.people["outsider"]
    other = owner.extra["project"]
    publish_template(client, other, owner.headers, items=None)
    publish_template(client, other, owner.headers, items=None)  # so the ids differ: t?.1 twice
    other_base = f"/v1/projects/{other}/consent"
    from tests.support.participants import national_id

    carol = client.post(
        f"{other_base}/participants",
        json={"national_id": national_id(dt.date(1980, 2, 3))},
        headers=owner.headers,
    ).json()["pseudonym"]
    moved = client.post(
        f"{other_base}/fhir", params={"participant": carol}, json=doc, headers=owner.headers
    )
    assert moved.status_code == 201, moved.text
    assert _decide(consent, other_base, owner, carol, at) == expected
    # and it exports again to the same provisions
    again = _export(consent, other_base, owner.headers, carol, version=version, at=at)
    assert len(again["entry"]) == 1


def test_project_export_is_ndjson_and_imports_by_subject(consent: Consent) -> None:
    client, dm = consent.client, consent.dm
    alice, bob, carol = (consent.enrol(email=f"{n}@example.org") for n in ("a", "b", "c"))
    consent.give(consent.participant(alice), hmb=True)
    consent.give(consent.participant(bob), hmb=False, cancer=True)
    client.post(
        "/v1/participant/withdraw", json={"scope": "stop_use"}, headers=consent.participant(bob)
    )
    r = client.get(f"{consent.base}/fhir", params={"version": "R4"}, headers=dm)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+ndjson")
    docs = [json.loads(line) for line in r.text.splitlines()]
    assert len(docs) == 2  # carol has no consent events
    assert [d["patient"]["reference"] for d in docs] == [f"Patient/{alice}", f"Patient/{bob}"]
    assert docs[1]["status"] == "rejected"
    for d in docs:
        validate_fhir(d, "R4")
    assert carol

    # a Bundle importing each document for its own subject (all or nothing)
    before = client.get(f"{consent.base}/participants/{alice}/events", headers=dm).json()
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": docs[0]}]}
    ok = client.post(f"{consent.base}/fhir", json=bundle, headers=dm)
    assert ok.status_code == 201, ok.text
    assert ok.json()["participants"] == [alice]
    after = client.get(f"{consent.base}/participants/{alice}/events", headers=dm).json()
    assert len(after) == len(before) + 1


def test_invalid_documents_and_unknown_participants_are_refused(consent: Consent) -> None:
    client, dm = consent.client, consent.dm
    alice = consent.enrol()
    consent.give(consent.participant(alice), hmb=True)
    doc = _export(consent, consent.base, dm, alice)["entry"][0]["resource"]
    url = f"{consent.base}/fhir"

    def refused(body: Any, status: int, code: str, needle: str, **params: str) -> None:
        r = client.post(url, json=body, params=params, headers=dm)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code, r.text
        assert needle in r.json()["error"]["message"], r.text

    bad = copy.deepcopy(doc)
    bad["status"] = 42
    refused(bad, 422, "fhir_invalid", "status")
    refused({"resourceType": "Patient"}, 422, "invalid_input", "resourceType")
    odd = copy.deepcopy(doc)
    odd["provision"][0]["actor"] = [{"reference": {"reference": "Practitioner/1"}}]
    refused(odd, 422, "fhir_unsupported", "actor")
    stranger = copy.deepcopy(doc)
    stranger["subject"] = {"reference": "Patient/" + "0" * 32}
    refused(stranger, 404, "participant_not_found", "0" * 32)
    refused(doc, 404, "participant_not_found", "participant", participant="f" * 32)
    other_text = copy.deepcopy(doc)
    for ext in other_text["extension"]:
        if ext["url"].endswith("consent-template"):
            for sub in ext["extension"]:
                if sub["url"] == "textHash":
                    sub["valueString"] = "sha256:" + "0" * 64
    refused(other_text, 422, "fhir_template_unknown", "sha256:" + "0" * 64)
    future = copy.deepcopy(doc)
    future["period"]["start"] = "2999-01-01T00:00:00Z"
    refused(future, 422, "fhir_future_time", "future")
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": doc}, {"resource": bad}],
    }
    before = client.get(f"{consent.base}/participants/{alice}/events", headers=dm).json()
    refused(bundle, 422, "fhir_invalid", "Bundle.entry[1]")
    after = client.get(f"{consent.base}/participants/{alice}/events", headers=dm).json()
    assert after == before  # all or nothing
