"""Projects, memberships, API keys, status and key rotation over the API."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from hvelv.platform import Platform
from hvelv.projects import keys
from tests.conftest import PROJECT_BODY
from tests.support.people import Person


def test_operator_creates_project_in_under_a_second(client: TestClient, operator: Person) -> None:
    started = time.perf_counter()
    response = client.post("/v1/projects", json=PROJECT_BODY, headers=operator.headers)
    elapsed = time.perf_counter() - started
    assert response.status_code == 201
    body = response.json()
    assert body["pid"] == "p1001"
    assert body["active"] is True
    assert elapsed < 1.0  # the "seconds, not days" promise, with a wide margin
    second = client.post("/v1/projects", json=PROJECT_BODY, headers=operator.headers)
    assert second.json()["pid"] == "p1002"


def test_members_see_their_projects_only(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    mine = client.get("/v1/projects", headers=people["member"].headers).json()["items"]
    assert [p["pid"] for p in mine] == [project]
    theirs = client.get("/v1/projects", headers=people["outsider"].headers).json()["items"]
    assert project not in [p["pid"] for p in theirs]
    refused = client.get(f"/v1/projects/{project}", headers=people["outsider"].headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "not_a_member"
    everything = client.get("/v1/projects", headers=people["operator"].headers).json()["items"]
    assert len(everything) == 2


def test_owner_updates_purposes_but_not_status(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    owner = people["owner"].headers
    changed = client.patch(
        f"/v1/projects/{project}",
        json={"purposes": [{"code": "DUO:0000007", "disease": "MONDO:0005015"}]},
        headers=owner,
    )
    assert changed.status_code == 200
    assert changed.json()["purposes"][0]["disease"] == "MONDO:0005015"
    frozen = client.patch(f"/v1/projects/{project}/admin", json={"status": "frozen"}, headers=owner)
    assert frozen.status_code == 403


def test_frozen_project_allows_only_audit_and_metadata_reads(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    op = people["operator"].headers
    assert (
        client.patch(
            f"/v1/projects/{project}/admin", json={"status": "frozen"}, headers=op
        ).status_code
        == 200
    )
    owner = people["owner"].headers
    assert client.get(f"/v1/projects/{project}/audit", headers=owner).status_code == 200
    assert client.get(f"/v1/projects/{project}", headers=owner).json()["status"] == "frozen"
    refused = client.get(f"/v1/projects/{project}/api-keys", headers=owner)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "project_inactive"
    # the operator can still administer (and unfreeze) it
    assert (
        client.patch(
            f"/v1/projects/{project}/admin", json={"status": "active"}, headers=op
        ).status_code
        == 200
    )
    assert client.get(f"/v1/projects/{project}/api-keys", headers=owner).status_code == 200


def test_expired_approval_makes_project_inactive(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    op = people["operator"].headers
    response = client.patch(
        f"/v1/projects/{project}/admin",
        json={"approval_start": "2020-01-01", "approval_end": "2021-01-01"},
        headers=op,
    )
    assert response.json()["active"] is False
    refused = client.get(f"/v1/projects/{project}/members", headers=people["owner"].headers)
    assert refused.json()["error"]["code"] == "project_inactive"


def test_operator_has_no_data_actions(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    op = people["operator"].headers
    assert client.get(f"/v1/projects/{project}/audit", headers=op).status_code == 403
    assert client.get(f"/v1/projects/{project}/api-keys", headers=op).status_code == 403
    refused = client.post(
        f"/v1/projects/{project}/members", json={"username": "olga", "role": "member"}, headers=op
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "operator_not_member"


def test_membership_add_remove(client: TestClient, people: dict[str, Person], project: str) -> None:
    owner = people["owner"].headers
    added = client.post(
        f"/v1/projects/{project}/members",
        json={"username": "outsider", "role": "auditor"},
        headers=owner,
    )
    assert added.status_code == 201
    duplicate = client.post(
        f"/v1/projects/{project}/members",
        json={"username": "outsider", "role": "auditor"},
        headers=owner,
    )
    assert duplicate.status_code == 409
    outsider = people["outsider"].headers
    assert client.get(f"/v1/projects/{project}/audit", headers=outsider).status_code == 200
    assert (
        client.delete(f"/v1/projects/{project}/members/outsider", headers=owner).status_code == 204
    )
    assert client.get(f"/v1/projects/{project}/audit", headers=outsider).status_code == 403
    missing = client.delete(f"/v1/projects/{project}/members/outsider", headers=owner)
    assert missing.status_code == 404
    nobody = client.post(
        f"/v1/projects/{project}/members",
        json={"username": "nobody", "role": "member"},
        headers=owner,
    )
    assert nobody.status_code == 404


def _create_key(client: TestClient, owner: Person, project: str, **overrides: Any) -> Any:
    body = {"name": "lab system", "actions": ["audit.read"], "expires_in_days": 30, **overrides}
    return client.post(f"/v1/projects/{project}/api-keys", json=body, headers=owner.headers)


def test_api_key_is_scoped_limited_audited_and_revocable(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    owner = people["owner"]
    created = _create_key(client, owner, project)
    assert created.status_code == 201
    secret = created.json()["secret"]
    key_id = created.json()["key_id"]
    listed = client.get(f"/v1/projects/{project}/api-keys", headers=owner.headers).json()
    assert "secret" not in listed[0]
    auth = {"Authorization": f"Bearer {secret}"}
    assert client.get(f"/v1/projects/{project}/audit", headers=auth).status_code == 200
    # not granted, or another project, or a self/platform action
    assert client.get(f"/v1/projects/{project}", headers=auth).status_code == 403
    other = people["outsider"].extra["project"]
    assert client.get(f"/v1/projects/{other}/audit", headers=auth).status_code == 403
    assert client.get("/v1/me", headers=auth).status_code == 403
    events = client.get(
        f"/v1/projects/{project}/audit", params={"action": "apikey.use"}, headers=owner.headers
    ).json()["items"]
    assert events
    assert events[0]["actor"] == f"api_key:{key_id}"
    assert (
        client.delete(
            f"/v1/projects/{project}/api-keys/{key_id}", headers=owner.headers
        ).status_code
        == 204
    )
    assert client.get(f"/v1/projects/{project}/audit", headers=auth).status_code == 401
    wrong = {"Authorization": f"Bearer {secret[:-2]}xx"}
    assert client.get(f"/v1/projects/{project}/audit", headers=wrong).status_code == 401


def test_api_key_refuses_ungrantable_actions_and_long_expiry(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    owner = people["owner"]
    refused = _create_key(client, owner, project, actions=["member.manage"])
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "action_not_grantable"
    too_long = _create_key(client, owner, project, expires_in_days=3000)
    assert too_long.json()["error"]["code"] == "expiry_too_long"
    unknown = _create_key(client, owner, project, actions=["files.delete_everything"])
    assert unknown.status_code == 422


def test_key_rotation_rewraps_data_keys(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    with platform.db.write() as session:
        key_id, raw = keys.new_data_key(session, platform.keyring, project)
    response = client.post(f"/v1/projects/{project}/keys/rotate", headers=people["owner"].headers)
    assert response.status_code == 200
    assert response.json() == {"version": 2, "rewrapped_data_keys": 1}
    with platform.db.read() as session:
        assert keys.data_key(session, platform.keyring, project, key_id) == raw
        assert keys.current_version(session, project) == 2
