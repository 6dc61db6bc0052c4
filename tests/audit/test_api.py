"""Reading the audit log: filters, pagination, project isolation, platform view."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.people import Person


def test_project_audit_shows_the_story(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    owner = people["owner"].headers
    events = client.get(f"/v1/projects/{project}/audit", headers=owner).json()["items"]
    actions = [e["action"] for e in events]
    assert actions[0] == "project.create"
    assert actions.count("member.add") == 4
    assert all(e["project"] == project for e in events)
    assert all(len(e["hash"]) == 64 for e in events)
    other = people["outsider"].extra["project"]
    assert client.get(f"/v1/projects/{other}/audit", headers=owner).status_code == 403


def test_filters_and_pagination(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    owner = people["owner"].headers
    adds = client.get(
        f"/v1/projects/{project}/audit", params={"action": "member.add"}, headers=owner
    ).json()["items"]
    assert len(adds) == 4
    by_target = client.get(
        f"/v1/projects/{project}/audit", params={"target": "user:member"}, headers=owner
    ).json()["items"]
    assert [e["action"] for e in by_target] == ["member.add"]
    page1 = client.get(f"/v1/projects/{project}/audit", params={"limit": 2}, headers=owner).json()
    assert len(page1["items"]) == 2
    page2 = client.get(
        f"/v1/projects/{project}/audit",
        params={"limit": 2, "after_seq": page1["next_after_seq"]},
        headers=owner,
    ).json()
    assert page2["items"][0]["seq"] > page1["items"][-1]["seq"]
    actor = client.get(
        f"/v1/projects/{project}/audit", params={"actor": "user:olga"}, headers=owner
    ).json()["items"]
    assert actor
    assert {e["actor"] for e in actor} == {"user:olga"}
    future = client.get(
        f"/v1/projects/{project}/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=owner
    ).json()["items"]
    assert future == []
    past = client.get(
        f"/v1/projects/{project}/audit", params={"until": "2000-01-01T00:00:00Z"}, headers=owner
    ).json()["items"]
    assert past == []


def test_platform_audit_for_operators(client: TestClient, people: dict[str, Person]) -> None:
    events = client.get(
        "/v1/audit", params={"action": "auth.login"}, headers=people["operator"].headers
    ).json()["items"]
    assert {e["target"] for e in events} >= {"user:olga", "user:owner"}
    administration = client.get(
        "/v1/audit", params={"action": "project.create"}, headers=people["operator"].headers
    ).json()["items"]
    assert len(administration) == 2
    assert client.get("/v1/audit", headers=people["owner"].headers).status_code == 403
