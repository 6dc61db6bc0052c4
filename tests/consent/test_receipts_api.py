"""Signed receipts through the API: rebuilt from the ledger row (same bytes every time), own
events only, checked offline with the CLI and the key from ``hvelv keys public``."""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

from hvelv.audit.trail import AuditTrail
from hvelv.consent import service
from hvelv.consent.model import EventKind
from hvelv.consent.receipts import load_public_key, verify_receipt
from tests.consent.conftest import Consent
from tests.support.participants import national_id
from tests.support.server import hvelv_command


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*hvelv_command(), *args], capture_output=True, text=True, check=False)


def test_every_event_has_a_receipt_that_verifies_offline(consent: Consent, tmp_path: Path) -> None:
    client = consent.client
    pseudonym = consent.enrol()
    me = consent.participant(pseudonym)
    assert consent.give(me, hmb=True).status_code == 201
    changed = client.post(
        f"/v1/participant/consents/{consent.template_id}/items/cancer",
        json={"granted": True},
        headers=me,
    )
    assert changed.status_code == 200, changed.text
    withdrawn = client.post("/v1/participant/withdraw", json={"scope": "delete_data"}, headers=me)
    assert withdrawn.status_code == 201

    history = client.get("/v1/participant/history", headers=me).json()
    assert [e["kind"] for e in history] == ["given", "changed", "withdrawn"]
    assert all(e["receipt"] == f"/v1/participant/receipts/{e['seq']}" for e in history)

    pem = _cli("keys", "public", "--home", str(consent.platform.settings.home))
    assert pem.returncode == 0, pem.stderr
    key_file = tmp_path / "platform.pem"
    key_file.write_text(pem.stdout)
    public = load_public_key(pem.stdout)

    receipts: list[dict[str, Any]] = []
    for event in history:
        response = client.get(event["receipt"], headers=me)
        assert response.status_code == 200, response.text
        again = client.get(event["receipt"], headers=me)
        assert again.content == response.content  # rebuilt: the same bytes every time
        receipt = response.json()
        assert verify_receipt(receipt, public)
        receipts.append(receipt)
        path = tmp_path / f"receipt-{event['seq']}.json"
        path.write_bytes(response.content)
        ok = _cli("consent", "verify-receipt", str(path), "--key", str(key_file))
        assert ok.returncode == 0, ok.stdout + ok.stderr

    given, changed_r, withdrawn_r = receipts
    assert given["piiPrincipalId"] == pseudonym
    assert given["hvelv"]["event"]["kind"] == "given"
    assert given["hvelv"]["template"]["versionId"] == consent.version_id
    assert given["hvelv"]["ledger"] == {"position": history[0]["seq"], "hash": history[0]["hash"]}
    granted = {p["itemId"]: p.get("granted") for p in given["services"][0]["purposes"]}
    assert granted == {"hmb": True, "cancer": None, "no-genome-share": None}
    assert changed_r["hvelv"]["event"]["choices"] == {"cancer": True}
    assert withdrawn_r["hvelv"]["event"]["withdrawalScope"] == "delete_data"
    assert withdrawn_r["services"] == []
    assert len({r["consentReceiptID"] for r in receipts}) == 3
    # no national id anywhere in a receipt
    text = json.dumps(receipts)
    assert "kari@example.org" not in text

    # a tampered copy fails offline
    tampered = copy.deepcopy(given)
    tampered["services"][0]["purposes"][1]["granted"] = True
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(tampered))
    refused = _cli("consent", "verify-receipt", str(bad), "--key", str(key_file))
    assert refused.returncode == 1, refused.stdout
    assert "signature" in (refused.stdout + refused.stderr)

    # staff see the same receipt through their route
    events = client.get(f"{consent.base}/participants/{pseudonym}/events", headers=consent.dm)
    first = events.json()[0]
    assert first["receipt"] == (
        f"/v1/projects/{consent.pid}/consent/participants/{pseudonym}/receipts/{first['seq']}"
    )
    staff = client.get(first["receipt"], headers=consent.dm)
    assert staff.status_code == 200
    assert staff.json() == given


def test_receipts_of_other_participants_are_not_found(consent: Consent) -> None:
    client = consent.client
    alice = consent.enrol()
    bob = consent.enrol(email="ola@example.org")
    a, b = consent.participant(alice), consent.participant(bob)
    seq_a = consent.give(a, hmb=True).json()["seq"]
    consent.give(b, hmb=True)
    assert client.get(f"/v1/participant/receipts/{seq_a}", headers=a).status_code == 200
    other = client.get(f"/v1/participant/receipts/{seq_a}", headers=b)
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "event_not_found"
    assert client.get("/v1/participant/receipts/999", headers=a).status_code == 404
    base = f"{consent.base}/participants"
    wrong = client.get(f"{base}/{bob}/receipts/{seq_a}", headers=consent.dm)
    assert wrong.status_code == 404
    member = client.get(
        f"{base}/{alice}/receipts/{seq_a}", headers=consent.people["member"].headers
    )
    assert member.status_code == 403


def test_paper_events_and_national_ids_in_receipts(consent: Consent) -> None:
    nid = national_id(dt.date(1970, 5, 17))
    response = consent.client.post(
        f"{consent.base}/participants", json={"national_id": nid}, headers=consent.dm
    )
    pseudonym = response.json()["pseudonym"]
    event = consent.client.post(
        f"{consent.base}/participants/{pseudonym}/events",
        json={
            "kind": "given",
            "template_version": consent.version_id,
            "choices": {"hmb": True},
            "channel": "paper",
            "assurance": "substantial",
        },
        headers=consent.dm,
    )
    assert event.status_code == 201, event.text
    receipt = consent.client.get(event.json()["receipt"] or "", headers=consent.dm)
    assert receipt.status_code == 200, receipt.text
    body = receipt.json()
    assert body["collectionMethod"] == "paper form"
    assert nid not in receipt.text


def test_participant_changes_see_events_committed_by_other_routes(consent: Consent) -> None:
    """Participant changes take their state from the process's consent cache: rows committed
    elsewhere (staff routes, other processes) must be caught up before the engine check."""
    client = consent.client
    pseudonym = consent.enrol()
    me = consent.participant(pseudonym)
    url = f"/v1/participant/consents/{consent.template_id}/items/cancer"
    assert consent.give(me, hmb=True).status_code == 201
    assert client.post(url, json={"granted": True}, headers=me).status_code == 200
    # a withdrawal recorded by staff (the member route reads the ledger, not the cache)
    staff = client.post(
        f"{consent.base}/participants/{pseudonym}/events",
        json={"kind": "withdrawn", "scope": "stop_use", "channel": "phone"},
        headers=consent.dm,
    )
    assert staff.status_code == 201, staff.text
    again = client.post(url, json={"granted": True}, headers=me)
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "consent_no_consent_to_change"

    # a new consent written straight to the database by "another process" is seen too
    def work(trail: AuditTrail) -> None:
        p = service.get_participant(trail.session, consent.pid, pseudonym)
        template = service.get_version_by_id(trail.session, consent.pid, consent.version_id)
        service.record_event(
            trail.session,
            trail,
            p,
            kind=EventKind.GIVEN,
            acting=service.PARTICIPANT,
            channel="paper",
            assurance="substantial",
            template=template,
            choices={"hmb": True},
        )

    consent.platform.run_as("local:test", work)
    granted = client.post(url, json={"granted": True}, headers=me)
    assert granted.status_code == 200, granted.text
    state = client.get("/v1/participant/consents", headers=me).json()
    assert state["withdrawal"] is None
    items = {i["item_id"]: i["granted"] for i in state["consents"][0]["items"]}
    assert items["cancer"] is True
