"""Every route in the OpenAPI document refuses callers that may not perform its action.

The matrix is derived from the OpenAPI document and the action table, so a new route is
covered the moment it exists: anonymous callers get 401, and a caller from another
project, a caller with too small a role, an operator on a data action, an API key
without the action and a token scoped to another project get 403.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from hvelv.http.routing import UnprotectedRoute, check_routes, endpoint, pages
from hvelv.security.actions import ACTIONS, Action, Role, Scope
from tests.support.people import Person, login

SAMPLE_PARAMS = {
    "username": "member",
    "key_id": "0123456789ab",
    "link_id": "0123456789ab",
    "upload_id": "0" * 32,
    "file_id": "0" * 32,
    "path": "folder/file.txt",
    "name": "visits",
    "version": "1",
}


def operations(client: TestClient) -> Iterator[tuple[str, str, Action, bool]]:
    spec = client.get("/v1/openapi.json").json()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield (
                path,
                method.upper(),
                Action(operation["x-hvelv-action"]),
                "requestBody" in operation,
            )


def call(
    client: TestClient, method: str, path: str, pid: str, headers: dict[str, str], body: bool
) -> Any:
    url = path.replace("{pid}", pid)
    for name, value in SAMPLE_PARAMS.items():
        url = url.replace("{" + name + "}", value)
    kwargs: dict[str, Any] = {"headers": headers}
    if body:
        kwargs["json"] = {}
    return client.request(method, url, **kwargs)


def test_the_matrix_covers_many_routes(client: TestClient) -> None:
    ops = list(operations(client))
    assert len(ops) >= 20
    assert {a for _, _, a, _ in ops} >= {
        a for a, i in ACTIONS.items() if i.scope is not Scope.PUBLIC
    }


def test_anonymous_callers_are_refused_everywhere(client: TestClient, project: str) -> None:
    for path, method, action, body in operations(client):
        if ACTIONS[action].scope is Scope.PUBLIC:
            continue
        response = call(client, method, path, project, {}, body)
        assert response.status_code == 401, (method, path, response.text)
        garbage = call(client, method, path, project, {"Authorization": "Bearer nonsense"}, body)
        assert garbage.status_code == 401, (method, path)


def test_project_routes_refuse_outsiders_small_roles_and_operators(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    checked = 0
    for path, method, action, body in operations(client):
        info = ACTIONS[action]
        if info.scope is not Scope.PROJECT:
            continue
        outsider = call(client, method, path, project, people["outsider"].headers, body)
        assert outsider.status_code == 403, (method, path, outsider.text)
        for role in Role:
            if role not in info.roles:
                response = call(client, method, path, project, people[role.value].headers, body)
                assert response.status_code == 403, (role, method, path, response.text)
                checked += 1
        if not info.operator:
            response = call(client, method, path, project, people["operator"].headers, body)
            assert response.status_code == 403, ("operator", method, path)
    assert checked > 10


def test_platform_routes_refuse_non_operators_and_self_routes_refuse_api_keys(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    key = client.post(
        f"/v1/projects/{project}/api-keys",
        json={"name": "integration", "actions": ["audit.read"]},
        headers=people["owner"].headers,
    ).json()["secret"]
    key_headers = {"Authorization": f"Bearer {key}"}
    for path, method, action, body in operations(client):
        info = ACTIONS[action]
        if info.scope is Scope.PLATFORM:
            for who in ("owner", "member", "outsider"):
                response = call(client, method, path, project, people[who].headers, body)
                assert response.status_code == 403, (who, method, path)
        if info.scope in (Scope.PLATFORM, Scope.SELF):
            response = call(client, method, path, project, key_headers, body)
            assert response.status_code == 403, ("api key", method, path)
        if info.scope is Scope.PROJECT and action is not Action.AUDIT_READ:
            response = call(client, method, path, project, key_headers, body)
            assert response.status_code == 403, ("api key", method, path)


def test_token_scoped_to_another_project_is_refused(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    owner = people["owner"]
    other = people["outsider"].extra["project"]
    client.post(
        f"/v1/projects/{other}/members",
        json={"username": owner.username, "role": "owner"},
        headers=people["operator"].headers,
    )
    scoped = login(
        client,
        Person(owner.username, owner.password, owner.totp_secret, last_step=owner.last_step),
        project=other,
    )
    for path, method, action, body in operations(client):
        if ACTIONS[action].scope is Scope.PROJECT:
            response = call(client, method, path, project, scoped.headers, body)
            assert response.status_code == 403, (method, path)
            if method != "HEAD":  # HEAD responses carry no body
                assert response.json()["error"]["code"] == "token_scope"
    assert client.get(f"/v1/projects/{other}", headers=scoped.headers).status_code == 200


def test_refusals_are_audited(client: TestClient, people: dict[str, Person], project: str) -> None:
    client.get(f"/v1/projects/{project}/api-keys", headers=people["member"].headers)
    events = client.get(
        f"/v1/projects/{project}/audit",
        params={"outcome": "denied", "action": "apikey.list"},
        headers=people["owner"].headers,
    ).json()["items"]
    assert events
    assert events[-1]["actor"] == "user:member"
    assert events[-1]["details"]["reason"] == "role"


def test_a_route_without_an_action_cannot_start() -> None:
    app = FastAPI(openapi_url=None)

    @app.get("/sneaky")
    def sneaky() -> dict[str, str]:
        return {}

    with pytest.raises(UnprotectedRoute, match="sneaky"):
        check_routes(app)


def test_framework_routes_other_than_openapi_are_refused() -> None:
    with pytest.raises(UnprotectedRoute, match="not an action-declaring"):
        check_routes(FastAPI())


def test_a_route_without_an_action_in_an_included_router_cannot_start() -> None:
    app = FastAPI(openapi_url=None)
    router = APIRouter(prefix="/inner")

    @router.get("/sneaky")
    def sneaky() -> dict[str, str]:
        return {}

    app.include_router(router)
    with pytest.raises(UnprotectedRoute, match="/inner/sneaky"):
        check_routes(app)


def test_declared_routes_pass_the_start_up_check() -> None:
    app = FastAPI(openapi_url=None)
    router = APIRouter()

    @endpoint(router, "GET", "/fine", Action.HEALTH)
    def fine() -> dict[str, str]:
        return {}

    app.include_router(router)
    check_routes(app)


# -- server-rendered pages (the participant portal): not in the OpenAPI document, so walked
# -- from the app's routes instead

PAGE_PARAMS = {"key": "t1", "item": "hmb", "seq": "1", "request_id": "1"}


def page_url(path: str) -> str:
    for name, value in PAGE_PARAMS.items():
        path = path.replace("{" + name + "}", value)
    return path


def test_pages_are_declared_checked_and_kept_out_of_the_openapi_document(
    client: TestClient,
) -> None:
    found = pages(client.app)  # type: ignore[arg-type]
    assert len(found) >= 15
    spec = client.get("/v1/openapi.json").json()
    assert not any(p.startswith("/portal") for p in spec["paths"])
    actions = {a for _, _, a in found}
    assert actions >= {Action.PARTICIPANT_READ, Action.PARTICIPANT_CONSENT, Action.PORTAL_PUBLIC}


def test_participant_pages_refuse_anonymous_callers_and_users(
    client: TestClient, people: dict[str, Person]
) -> None:
    checked = 0
    for method, path, action in pages(client.app):  # type: ignore[arg-type]
        if ACTIONS[action].scope is Scope.PUBLIC:
            continue
        url = page_url(path)
        anonymous = client.request(method, url)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert anonymous.headers["content-type"].startswith("text/html")
        client.cookies.set("hvelv_portal", "hvp_x~1~forged", path="/portal")
        forged = client.request(method, url)
        client.cookies.clear()
        assert forged.status_code == 401, (method, path)
        for who in ("member", "owner", "operator"):
            response = client.request(method, url, headers=people[who].headers)
            assert response.status_code == 403, (who, method, path)
        checked += 1
    assert checked >= 10


def test_every_page_form_needs_a_csrf_token(client: TestClient) -> None:
    posts = [(m, p) for m, p, a in pages(client.app) if m == "POST"]  # type: ignore[arg-type]
    assert len(posts) >= 8
    for method, path in posts:
        if not path.startswith("/portal/sign-in") and path != "/portal/language":
            continue  # the signed-in forms refuse anonymous callers first (above)
        response = client.request(method, page_url(path), data={"code": "123456", "lang": "en"})
        assert response.status_code == 403, (path, response.status_code)
        assert "Skjemaet var for gammelt" in response.text
