"""One error shape for every error of every route; bad input never causes a 500."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from hvelv.platform import Platform
from hvelv.security.actions import ACTIONS, Action, Role, Scope
from tests.http.test_authorization_matrix import call, operations
from tests.support.participants import enrol, session_headers
from tests.support.people import Person


def assert_error_shape(response: Any, status: int | None = None) -> dict[str, Any]:
    assert response.status_code >= 400, response.text
    if status is not None:
        assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["code"], str)
    assert body["error"]["message"]
    return dict(body["error"])


def allowed_person(action: Action, people: dict[str, Person]) -> Person | None:
    info = ACTIONS[action]
    if info.scope is Scope.PUBLIC:
        return None
    if info.scope is Scope.PLATFORM or (info.operator and not info.roles):
        return people["operator"]
    for role in Role:
        if role in info.roles:
            return people[role.value]
    return people["member"]


def test_bad_bodies_get_clear_4xx_on_every_route(
    client: TestClient, people: dict[str, Person], project: str, platform: Platform
) -> None:
    participant = session_headers(platform, project, enrol(platform, project, "15108695088"))
    spec = client.get("/v1/openapi.json").json()
    checked = 0
    for path, method, action, has_body in operations(client):
        content = spec["paths"][path][method.lower()].get("requestBody", {}).get("content", {})
        if not has_body or "application/json" not in content:
            continue  # a file body (dataset upload) has its own tests of bad input
        person = allowed_person(action, people)
        headers = dict(person.headers) if person else {}
        if ACTIONS[action].scope is Scope.PARTICIPANT:
            headers = participant
        url = path.replace("{pid}", project).replace("{username}", "member")
        url = url.replace("{key_id}", "0123456789ab")
        malformed = client.request(
            method,
            url,
            content=b'{"name": ',
            headers={**headers, "content-type": "application/json"},
        )
        assert assert_error_shape(malformed, 400)["code"] == "malformed_json", (method, path)
        unknown = client.request(method, url, json={"surely_unknown_field": 1}, headers=headers)
        assert assert_error_shape(unknown, 422)["code"] == "invalid_input", (method, path)
        wrong_type = client.request(method, url, json=[1, 2, 3], headers=headers)
        assert_error_shape(wrong_type, 422)
        huge = client.request(
            method,
            url,
            content=b"{" + b" " * 2_000_000 + b"}",
            headers={**headers, "content-type": "application/json"},
        )
        assert assert_error_shape(huge, 413)["code"] == "payload_too_large"
        checked += 1
    assert checked >= 40, checked


def test_framework_errors_use_the_shape(client: TestClient, people: dict[str, Person]) -> None:
    assert assert_error_shape(client.get("/nowhere"), 404)["code"] == "not_found"
    assert assert_error_shape(client.put("/healthz"), 405)["code"] == "method_not_allowed"
    bad_query = client.get(
        "/v1/users", params={"limit": "many"}, headers=people["operator"].headers
    )
    assert_error_shape(bad_query, 422)
    # authorization runs before validation: an unknown project is a 404 for operators
    unknown = client.get("/v1/projects/not-a-pid", headers=people["operator"].headers)
    assert assert_error_shape(unknown, 404)["code"] == "project_not_found"
    assert_error_shape(client.get("/v1/projects/p9999", headers=people["member"].headers), 403)


def test_refusals_use_the_shape(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    for path, method, action, body in operations(client):
        if ACTIONS[action].scope is Scope.PUBLIC:
            continue
        response = call(client, method, path, project, {}, body)
        if method == "HEAD":  # no body by definition; the status still tells
            assert response.status_code == 401
            continue
        assert_error_shape(response, 401)


def test_validation_errors_do_not_echo_input(client: TestClient) -> None:
    response = client.post(
        "/v1/auth/token",
        json={"username": "x", "password": "hunter2-secret", "totp_code": "12"},
    )
    assert_error_shape(response, 422)
    assert "hunter2-secret" not in response.text


def test_security_headers_and_request_id(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "abcdef123456"})
    assert response.headers["x-request-id"] == "abcdef123456"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id!"})
    assert generated.headers["x-request-id"] != "bad id!"
