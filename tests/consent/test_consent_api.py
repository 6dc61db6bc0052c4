"""The consent API end to end: templates, consent events, decisions, snapshots, the decision log,
deletion tasks, proxies and re-consent — against the real app and database."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hvelv.audit.models import AuditEvent
from hvelv.audit.trail import AuditTrail
from hvelv.consent import ledger, service
from hvelv.consent.model import ActorKind, EventKind
from hvelv.consent.models import ConsentEventRow
from tests.consent.conftest import CHILD_BIRTH, HMB_USE, ITEMS, TEXTS, Consent
from tests.support.people import Person


def test_templates_are_versioned_and_immutable_once_published(consent: Consent) -> None:
    client, base, dm = consent.client, consent.base, consent.dm
    key = consent.template_id
    published = client.get(f"{base}/templates/{key}/versions/1", headers=dm).json()
    assert published["status"] == "published"
    assert published["text_hashes"]["nb"].startswith("sha256:")
    patched = client.patch(f"{base}/templates/{key}/versions/1", json={"title": "x"}, headers=dm)
    assert patched.status_code == 409
    assert patched.json()["error"]["code"] == "template_published"
    again = client.post(f"{base}/templates/{key}/versions/1/publish", headers=dm)
    assert again.status_code == 409
    draft = client.post(
        f"{base}/templates/{key}/versions",
        json={"title": "Main consent v2", "texts": TEXTS, "items": ITEMS[:1]},
        headers=dm,
    )
    assert draft.status_code == 201, draft.text
    assert draft.json()["version_id"] == f"{key}.2"
    assert draft.json()["status"] == "draft"
    second = client.post(
        f"{base}/templates/{key}/versions",
        json={"title": "v3", "texts": TEXTS, "items": ITEMS},
        headers=dm,
    )
    assert second.json()["error"]["code"] == "draft_exists"
    changed = client.patch(
        f"{base}/templates/{key}/versions/2", json={"title": "Renamed"}, headers=dm
    )
    assert changed.json()["title"] == "Renamed"
    listed = client.get(f"{base}/templates", headers=consent.people["auditor"].headers)
    assert [t["version_id"] for t in listed.json()] == [f"{key}.1", f"{key}.2"]


def test_invalid_template_items_are_refused_with_reasons(consent: Consent) -> None:
    study = consent.client.get(f"{consent.base}/studies", headers=consent.dm).json()[0]["id"]
    bad_items = [
        {"item_id": "a", "effect": "permit", "purpose": {"code": "DS"}},  # DS without disease
        {
            "item_id": "b",
            "effect": "deny",
            "purpose": {"code": "GRU"},
            "modifiers": {"codes": ["PUB"]},
        },
        {"item_id": "c", "effect": "permit", "purpose": {"code": "HMB"}, "actions": ["sell"]},
        {"item_id": "d", "effect": "permit", "purpose": {"code": "XYZ"}},
    ]
    response = consent.client.post(
        f"{consent.base}/studies/{study}/templates",
        json={"title": "Bad", "texts": TEXTS, "items": bad_items},
        headers=consent.dm,
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_template"
    assert [p["item"] for p in error["details"]] == [0, 1, 2, 3]


def test_participant_grants_and_withdraws_and_decisions_follow(consent: Consent) -> None:
    pseudonym = consent.enrol()
    me = consent.participant(pseudonym)
    assert consent.decide(pseudonym)["reasons"] == ["consent.none"]

    given = consent.give(me, hmb=True, cancer=True)
    assert given.status_code == 201, given.text
    assert (
        given.json()["text_hash"]
        == consent.client.get(
            f"{consent.base}/templates/{consent.template_id}/versions/1", headers=consent.dm
        ).json()["text_hashes"]["nb"]
    )
    permit = consent.decide(pseudonym)
    assert permit["permit"] is True
    assert permit["reasons"] == [f"permit.{consent.version_id}/hmb"]
    assert permit["ledger_position"] == given.json()["seq"]

    # withdrawing one item is the same single call as granting it
    url = f"/v1/participant/consents/{consent.template_id}/items/hmb"
    off = consent.client.post(url, json={"granted": False}, headers=me)
    assert off.status_code == 200, off.text
    assert consent.decide(pseudonym)["permit"] is False
    on = consent.client.post(url, json={"granted": True}, headers=me)
    assert on.status_code == 200
    assert consent.decide(pseudonym)["permit"] is True

    view = consent.client.get("/v1/participant/consents", headers=me).json()
    (mine,) = view["consents"]
    assert mine["consented"] is True
    assert {i["item_id"]: i["granted"] for i in mine["items"]} == {
        "hmb": True,
        "cancer": True,
        "no-genome-share": False,
    }
    assert mine["items"][0]["title"] == "Helseforskning"

    # a decision for the past is reproducible: before the grant it was a deny
    past = consent.decide(pseudonym, at=given.json()["at"])
    assert past["permit"] is True
    before = dt.datetime.fromisoformat(given.json()["at"]) - dt.timedelta(seconds=1)
    assert consent.decide(pseudonym, at=before.isoformat())["permit"] is False

    withdrawn = consent.client.post(
        "/v1/participant/withdraw", json={"scope": "stop_use"}, headers=me
    )
    assert withdrawn.status_code == 201
    assert consent.decide(pseudonym)["reasons"] == ["withdrawn.stop_use"]
    history = consent.client.get("/v1/participant/history", headers=me).json()
    assert [e["kind"] for e in history] == ["given", "changed", "changed", "withdrawn"]


def test_obligations_deny_items_and_approval_come_from_the_engine(consent: Consent) -> None:
    pseudonym = consent.enrol()
    assert consent.give(consent.participant(pseudonym), hmb=True, cancer=True).status_code == 201
    cancer_use = {**HMB_USE, "purpose": {"code": "DS", "disease": "MONDO:0007254"}}
    decision = consent.decide(pseudonym, cancer_use)
    assert decision["permit"] is True
    assert decision["obligations"] == ["PUB"]
    # the project is approved for HMB only: a GRU request fails rule 1
    gru = consent.decide(pseudonym, {**HMB_USE, "purpose": {"code": "GRU"}})
    assert "approval.purpose" in gru["reasons"]
    bad = consent.client.post(
        f"{consent.base}/decisions",
        json={"participant": pseudonym, "use": {**HMB_USE, "purpose": {"code": "NRES"}}},
        headers=consent.people["member"].headers,
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_use"


def test_snapshot_lists_permitted_pseudonyms_and_is_logged(consent: Consent) -> None:
    yes, no, silent = consent.enrol(), consent.enrol(), consent.enrol()
    consent.give(consent.participant(yes), hmb=True)
    consent.give(consent.participant(no), cancer=True)
    snap = consent.snapshot()
    assert snap["pseudonyms"] == [yes]
    assert snap["count"] == 1
    # incrementally updated: a new grant shows in the next snapshot
    consent.give(consent.participant(silent), hmb=True)
    again = consent.snapshot()
    assert sorted(again["pseudonyms"]) == sorted([yes, silent])
    assert again["ledger_position"] > snap["ledger_position"]
    for pseudonym in (yes, no, silent):
        single = consent.decide(pseudonym)
        assert single["permit"] is (pseudonym in again["pseudonyms"])

    log = consent.client.get(
        f"{consent.base}/decision-log", headers=consent.people["auditor"].headers
    ).json()["items"]
    assert [e["kind"] for e in log][:2] == ["snapshot", "snapshot"]
    assert log[0]["requester"] == "user:member"
    assert log[0]["ledger_position"] == snap["ledger_position"]

    # which uses relied on each participant (members' and participant's view)
    relied = consent.client.get(
        f"{consent.base}/participants/{silent}/uses", headers=consent.people["auditor"].headers
    ).json()
    assert [u["kind"] for u in relied] == ["snapshot", "decision"]  # not the first snapshot
    mine = consent.client.get("/v1/participant/uses", headers=consent.participant(yes)).json()
    assert [u["kind"] for u in mine] == ["snapshot", "snapshot", "decision"]
    assert mine[0]["purpose"] == "HMB"
    assert mine[0]["requester"] == "user:member"
    nothing = consent.client.get("/v1/participant/uses", headers=consent.participant(no)).json()
    assert nothing == []


def test_withdrawal_with_deletion_creates_a_task_due_in_30_days(consent: Consent) -> None:
    pseudonym = consent.enrol()
    me = consent.participant(pseudonym)
    consent.give(me, hmb=True)
    withdrawn = consent.client.post(
        "/v1/participant/withdraw", json={"scope": "delete_data"}, headers=me
    ).json()
    (task,) = consent.client.get(f"{consent.base}/deletion-tasks", headers=consent.dm).json()
    assert task["participant"] == pseudonym
    assert task["scope"] == "delete_data"
    assert task["event_seq"] == withdrawn["seq"]
    due = dt.datetime.fromisoformat(task["due_at"]) - dt.datetime.fromisoformat(withdrawn["at"])
    assert due == dt.timedelta(days=30)
    done = consent.client.post(
        f"{consent.base}/deletion-tasks/{task['id']}/complete",
        json={"note": "rows deleted from dataset d1"},
        headers=consent.dm,
    )
    assert done.status_code == 200
    assert done.json()["completed_by"] == "user:datamanager"
    assert consent.client.get(f"{consent.base}/deletion-tasks", headers=consent.dm).json() == []
    twice = consent.client.post(
        f"{consent.base}/deletion-tasks/{task['id']}/complete", json={}, headers=consent.dm
    )
    assert twice.status_code == 409


def test_proxy_consent_counts_only_while_the_participant_is_a_minor(consent: Consent) -> None:
    child = consent.enrol(CHILD_BIRTH)
    # the child cannot consent for themself
    refused = consent.give(consent.participant(child), hmb=True)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "consent_participant_under_age"
    proxy = consent.add_proxy(child)
    guardian = consent.participant(child, proxy_id=proxy["id"])
    assert consent.client.get("/v1/participant/me", headers=guardian).json()["acting_as"] == "proxy"
    given = consent.give(guardian, hmb=True)
    assert given.status_code == 201, given.text
    assert given.json()["kind"] == "proxy_given"
    assert given.json()["actor_kind"] == "proxy"
    assert consent.decide(child)["permit"] is True
    # at the age of majority the proxy's consent no longer permits
    of_age = dt.datetime.combine(
        CHILD_BIRTH.replace(year=CHILD_BIRTH.year + 16), dt.time(12), tzinfo=dt.UTC
    )
    later = consent.decide(child, at=of_age.isoformat())
    assert "consent.proxy_of_age" in later["reasons"]
    # ending the representation records proxy_ended; the guardian can no longer act
    ended = consent.client.post(
        f"{consent.base}/participants/{child}/proxies/{proxy['id']}/end", headers=consent.dm
    )
    assert ended.status_code == 200
    assert consent.decide(child)["reasons"] == ["consent.proxy_ended"]
    assert consent.give(guardian, hmb=True).status_code == 401  # the session ended with it
    kinds = [
        e["kind"]
        for e in consent.client.get(
            f"{consent.base}/participants/{child}/events", headers=consent.dm
        ).json()
    ]
    assert kinds == ["proxy_given", "proxy_ended"]


def test_staff_record_paper_consent_and_reconsent_requests(consent: Consent) -> None:
    pseudonym = consent.enrol()
    paper = consent.client.post(
        f"{consent.base}/participants/{pseudonym}/events",
        json={
            "kind": "given",
            "template_version": consent.version_id,
            "language": "en",
            "choices": {"hmb": True},
            "channel": "paper",
            "assurance": "substantial",
        },
        headers=consent.dm,
    )
    assert paper.status_code == 201, paper.text
    assert paper.json()["channel"] == "paper"
    assert paper.json()["language"] == "en"
    assert consent.decide(pseudonym)["permit"] is True
    unknown = consent.client.post(
        f"{consent.base}/participants/{pseudonym}/events",
        json={"kind": "given", "template_version": consent.version_id, "choices": {"zzz": True}},
        headers=consent.dm,
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "unknown_item"

    asked = consent.client.post(
        f"{consent.base}/reconsent",
        json={"template_version": consent.version_id, "reason": "new_purpose"},
        headers=consent.dm,
    )
    assert asked.json() == {"requests": 1}
    me = consent.participant(pseudonym)
    (request,) = consent.client.get("/v1/participant/requests", headers=me).json()
    assert request["answer"] is None
    answered = consent.client.post(
        f"/v1/participant/requests/{request['id']}",
        json={"answer": "given", "choices": {"hmb": True, "cancer": True}},
        headers=me,
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["answer"] == "given"
    again = consent.client.post(
        f"/v1/participant/requests/{request['id']}", json={"answer": "declined"}, headers=me
    )
    assert again.status_code == 409


def test_the_consent_ledger_is_hash_chained_and_tampering_is_found(consent: Consent) -> None:
    a, b = consent.enrol(), consent.enrol()
    consent.give(consent.participant(a), hmb=True)
    consent.give(consent.participant(b), cancer=True)
    consent.client.post("/v1/participant/withdraw", json={}, headers=consent.participant(a))
    auditor = consent.people["auditor"].headers
    assert consent.client.get(f"{consent.base}/ledger/verify", headers=auditor).json() == {
        "events": 3
    }
    with consent.platform.db.write() as session:
        row = session.execute(select(ConsentEventRow).where(ConsentEventRow.seq == 2)).scalar_one()
        row.choices = {"hmb": True}  # someone edits a column in place
    broken = consent.client.get(f"{consent.base}/ledger/verify", headers=auditor)
    assert broken.status_code == 409
    assert "consent event 2" in broken.json()["error"]["message"]
    with (
        consent.platform.db.read() as session,
        pytest.raises(ledger.ChainBroken, match="columns disagree"),
    ):
        ledger.verify(session, consent.pid)


def test_changes_are_audited_without_national_ids(
    consent: Consent, client: TestClient, people: dict[str, Person]
) -> None:
    pseudonym = consent.enrol()
    consent.give(consent.participant(pseudonym), hmb=True)
    consent.decide(pseudonym)
    events = client.get(
        f"/v1/projects/{consent.pid}/audit", params={"limit": 500}, headers=people["owner"].headers
    ).json()["items"]
    actions = [e["action"] for e in events]
    for expected in (
        "consent.study_create",
        "consent.template_create",
        "consent.template_publish",
        "consent.participant_enrol",
        "consent.given",
        "consent.decision",
    ):
        assert expected in actions, expected
    given = next(e for e in events if e["action"] == "consent.given")
    assert given["actor"] == f"participant:{pseudonym}"
    assert given["target"] == f"participant:{pseudonym}"
    with consent.platform.db.read() as session:
        bodies = b"".join(session.execute(select(AuditEvent.body)).scalars())
    participant = client.get(f"{consent.base}/participants/{pseudonym}", headers=consent.dm).json()
    assert participant["national_id"].startswith("*********")
    # the audit ledger never holds an 11-digit national id
    leaked = re.search(rb"(?<![0-9a-f])\d{11}(?![0-9a-f])", bodies)
    assert leaked is None, bodies[max(0, leaked.start() - 120) : leaked.end() + 20]


def test_coming_of_age_ends_representation_and_asks_for_own_consent(consent: Consent) -> None:
    today = dt.date.today()
    sixteen = today.replace(year=today.year - 16) if (today.month, today.day) != (2, 29) else None
    birth = sixteen or dt.date(today.year - 16, 2, 28)
    teen = consent.enrol(birth)
    younger = consent.enrol(CHILD_BIRTH)
    for who in (teen, younger):
        consent.client.post(
            f"{consent.base}/participants/{who}/proxies",
            json={"relation": "parent", "name": "Far"},
            headers=consent.dm,
        )
    # the guardian consented a month ago, while the teenager was 15
    with consent.platform.db.write() as session:
        trail = AuditTrail(session, consent.platform.ledger, "local:test")
        for who in (teen, younger):
            participant = service.get_participant(session, consent.pid, who)
            (proxy,) = service.list_proxies(session, participant)
            service.record_event(
                session,
                trail,
                participant,
                kind=EventKind.PROXY_GIVEN,
                acting=service.Acting(ActorKind.PROXY, proxy),
                channel="paper",
                assurance="substantial",
                template=service.get_version_by_id(session, consent.pid, consent.version_id),
                choices={"hmb": True},
                at=dt.datetime.now(dt.UTC) - dt.timedelta(days=30),
            )
    assert "consent.proxy_of_age" in consent.decide(teen)["reasons"]
    assert consent.decide(younger)["permit"] is True
    reviewed = consent.client.post(f"{consent.base}/proxies/review", headers=consent.dm)
    assert reviewed.status_code == 200, reviewed.text
    assert reviewed.json() == {"ended": [teen], "requests": 1}
    assert consent.client.post(f"{consent.base}/proxies/review", headers=consent.dm).json() == {
        "ended": [],
        "requests": 0,
    }
    kinds = [
        e["kind"]
        for e in consent.client.get(
            f"{consent.base}/participants/{teen}/events", headers=consent.dm
        ).json()
    ]
    assert kinds == ["proxy_given", "proxy_ended"]
    me = consent.participant(teen)
    (request,) = consent.client.get("/v1/participant/requests", headers=me).json()
    assert request["reason"] == "coming_of_age"
    answered = consent.client.post(
        f"/v1/participant/requests/{request['id']}",
        json={"answer": "given", "choices": {"hmb": True}},
        headers=me,
    )
    assert answered.json()["answer"] == "given"
    assert consent.decide(teen)["permit"] is True
    assert consent.decide(younger)["permit"] is True
