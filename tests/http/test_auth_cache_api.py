"""Authorization answered from the cache changes at once with a change made through the
server, and within ``auth_cache_seconds`` with one made elsewhere (another process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from hvelv.db.engine import Database
from hvelv.identity.models import AuthSession
from hvelv.platform import Platform
from tests.support.people import Person


def warm(client: TestClient, person: Person, pid: str) -> None:
    """Two reads: the first fills the cache, the second is answered from it."""
    for _ in range(2):
        assert client.get(f"/v1/projects/{pid}", headers=person.headers).status_code == 200
    assert person.token is not None


Change = Callable[[TestClient, dict[str, Person], str], Any]


def logout(client: TestClient, people: dict[str, Person], pid: str) -> Any:
    return client.post("/v1/auth/logout", headers=people["member"].headers)


def disable(client: TestClient, people: dict[str, Person], pid: str) -> Any:
    return client.patch(
        "/v1/users/member", json={"status": "disabled"}, headers=people["operator"].headers
    )


def remove(client: TestClient, people: dict[str, Person], pid: str) -> Any:
    return client.delete(f"/v1/projects/{pid}/members/member", headers=people["owner"].headers)


def freeze(client: TestClient, people: dict[str, Person], pid: str) -> Any:
    return client.patch(
        f"/v1/projects/{pid}/admin", json={"status": "frozen"}, headers=people["operator"].headers
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [(logout, 401), (disable, 401), (remove, 403), (freeze, 403)],
    ids=["logout", "disable", "remove-member", "freeze-project"],
)
def test_a_change_through_the_server_applies_to_the_next_request(
    client: TestClient, people: dict[str, Person], project: str, change: Change, expected: int
) -> None:
    member = people["member"]
    warm(client, member, project)
    # a read the member may do only while the project is active
    listing = f"/v1/projects/{project}/files/import"
    assert client.get(listing, headers=member.headers).status_code == 200
    response = change(client, people, project)
    assert response.status_code in (200, 204), response.text
    after = client.get(listing, headers=member.headers)
    assert after.status_code == expected, after.text


def test_a_project_change_is_read_at_once(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    owner = people["owner"]
    warm(client, owner, project)
    renamed = client.patch(
        f"/v1/projects/{project}", json={"name": "Renamed"}, headers=owner.headers
    )
    assert renamed.status_code == 200
    read = client.get(f"/v1/projects/{project}", headers=owner.headers)
    assert read.json()["name"] == "Renamed"


def end_logins_elsewhere(platform: Platform) -> None:
    """Another process (the CLI, a second replica) ends every login: this process's table
    watch does not see it."""
    other = Database(platform.settings.resolved_database_url)
    try:
        with other.write() as session:
            session.execute(update(AuthSession).values(revoked_at=AuthSession.created_at))
    finally:
        other.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_change_by_another_process_applies_within_the_cache_time(
    platform: Platform, client: TestClient, people: dict[str, Person], project: str
) -> None:
    clock = Clock()
    platform.auth.clock = clock
    member = people["member"]
    warm(client, member, project)
    end_logins_elsewhere(platform)
    clock.now += platform.settings.auth_cache_seconds * 0.25
    assert client.get(f"/v1/projects/{project}", headers=member.headers).status_code == 200
    clock.now += platform.settings.auth_cache_seconds  # past the entry's time
    refused = client.get(f"/v1/projects/{project}", headers=member.headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "session_ended"


def test_without_the_cache_every_request_reads_the_database(
    platform: Platform, client: TestClient, people: dict[str, Person], project: str
) -> None:
    platform.auth.seconds = 0
    member = people["member"]
    warm(client, member, project)
    end_logins_elsewhere(platform)
    assert client.get(f"/v1/projects/{project}", headers=member.headers).status_code == 401


def test_a_refusal_is_never_cached_and_is_audited_each_time(
    platform: Platform, client: TestClient, people: dict[str, Person], project: str
) -> None:
    outsider = people["outsider"]
    for _ in range(3):
        response = client.get(f"/v1/projects/{project}/members", headers=outsider.headers)
        assert response.status_code == 403
    audit = client.get(
        f"/v1/projects/{project}/audit",
        params={"actor": "user:outsider"},
        headers=people["auditor"].headers,
    )
    assert audit.status_code == 200, audit.text
    denied = [e for e in audit.json()["items"] if e["outcome"] == "denied"]
    assert len(denied) >= 3


def test_the_cached_read_renders_the_project_as_the_listing_does(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    owner = people["owner"]
    warm(client, owner, project)
    read = client.get(f"/v1/projects/{project}", headers=owner.headers)
    assert read.headers["content-type"] == "application/json"
    listed = client.get("/v1/projects", headers=owner.headers).json()["items"]
    assert [read.json()] == [p for p in listed if p["pid"] == project]
