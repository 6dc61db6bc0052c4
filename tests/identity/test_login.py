"""Login with password + TOTP: enrolment, one-time passwords, replay, lock-out, sessions."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from hvelv.identity import service as identity
from hvelv.identity.models import User
from hvelv.platform import Platform
from hvelv.security import totp
from tests.support.people import PASSWORD, Person, login, make_person


def token(client: TestClient, person: Person, **extra: Any) -> Any:
    body = {
        "username": person.username,
        "password": person.password,
        "totp_code": person.next_code(),
        **extra,
    }
    return client.post("/v1/auth/token", json=body)


def test_first_login_enrols_totp_and_replaces_the_one_time_password(
    client: TestClient, operator: Person
) -> None:
    created = client.post(
        "/v1/users",
        json={"username": "newbie", "display_name": "New Bie"},
        headers=operator.headers,
    )
    assert created.status_code == 201
    one_time = created.json()["one_time_password"]
    assert created.json()["totp_enrolled"] is False
    # without TOTP: enrolment is required first
    refused = client.post(
        "/v1/auth/token", json={"username": "newbie", "password": one_time, "totp_code": "000000"}
    )
    assert refused.json()["error"]["code"] == "totp_enrolment_required"
    enrol = client.post("/v1/auth/totp/enrol", json={"username": "newbie", "password": one_time})
    assert enrol.status_code == 200
    assert enrol.json()["otpauth_uri"].startswith("otpauth://totp/Hvelv:newbie?secret=")
    newbie = Person("newbie", one_time, enrol.json()["secret"])
    must_change = token(client, newbie)
    assert must_change.status_code == 403
    assert must_change.json()["error"]["code"] == "password_change_required"
    weak = token(client, newbie, new_password="short")
    assert weak.json()["error"]["code"] == "weak_password"
    ok = token(client, newbie, new_password="a much better passphrase")
    assert ok.status_code == 200, ok.text
    users = client.get("/v1/users", headers=operator.headers).json()["items"]
    newbie_row = next(u for u in users if u["username"] == "newbie")
    assert newbie_row["totp_enrolled"] is True
    assert newbie_row["password_must_change"] is False
    # enrolment cannot be restarted once done
    again = client.post(
        "/v1/auth/totp/enrol", json={"username": "newbie", "password": "a much better passphrase"}
    )
    assert again.status_code == 409


def test_totp_code_cannot_be_replayed(client: TestClient, platform: Platform) -> None:
    person = make_person(platform, "replayer")
    code = person.next_code()
    body = {"username": "replayer", "password": PASSWORD, "totp_code": code}
    assert client.post("/v1/auth/token", json=body).status_code == 200
    replay = client.post("/v1/auth/token", json=body)
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "invalid_credentials"


def test_wrong_password_and_unknown_user_look_the_same(
    client: TestClient, platform: Platform
) -> None:
    person = make_person(platform, "someone")
    wrong = client.post(
        "/v1/auth/token",
        json={"username": "someone", "password": "nope-nope-nope", "totp_code": person.next_code()},
    )
    unknown = client.post(
        "/v1/auth/token",
        json={"username": "nobody", "password": "nope-nope-nope", "totp_code": "123456"},
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_repeated_failures_lock_with_growing_backoff_and_are_audited(
    client: TestClient, platform: Platform, operator: Person
) -> None:
    person = make_person(platform, "target")
    bad = {"username": "target", "password": "wrong password!", "totp_code": "123456"}
    for _ in range(platform.settings.login_max_failures - 1):
        assert client.post("/v1/auth/token", json=bad).status_code == 401
    fifth = client.post("/v1/auth/token", json=bad)
    assert fifth.status_code == 401
    locked = client.post(
        "/v1/auth/token",
        json={"username": "target", "password": PASSWORD, "totp_code": person.next_code()},
    )
    assert locked.status_code == 429
    first_wait = locked.json()["error"]["details"]["retry_after_seconds"]
    assert int(locked.headers["retry-after"]) == first_wait
    # lift the lock (as time would) and fail again: the lock doubles
    with platform.db.write() as session:
        session.execute(update(User).where(User.username == "target").values(locked_until=None))
    client.post("/v1/auth/token", json=bad)
    locked_again = client.post("/v1/auth/token", json=bad)
    assert locked_again.status_code == 429
    assert locked_again.json()["error"]["details"]["retry_after_seconds"] > first_wait
    failures = client.get(
        "/v1/audit",
        params={"action": "auth.login", "outcome": "denied", "target": "user:target"},
        headers=operator.headers,
    ).json()["items"]
    assert len(failures) >= platform.settings.login_max_failures + 1
    assert all("wrong password!" not in str(e) for e in failures)


def test_refresh_rotates_and_reuse_revokes_the_session(
    client: TestClient, platform: Platform
) -> None:
    person = login(client, make_person(platform, "rotator"))
    first = person.refresh
    rotated = client.post("/v1/auth/refresh", json={"refresh_token": first})
    assert rotated.status_code == 200
    second = rotated.json()["refresh_token"]
    new_access = rotated.json()["access_token"]
    assert (
        client.get("/v1/me", headers={"Authorization": f"Bearer {new_access}"}).status_code == 200
    )
    # presenting the used token again is treated as theft: the whole session ends
    reuse = client.post("/v1/auth/refresh", json={"refresh_token": first})
    assert reuse.status_code == 401
    assert client.post("/v1/auth/refresh", json={"refresh_token": second}).status_code == 401
    assert (
        client.get("/v1/me", headers={"Authorization": f"Bearer {new_access}"}).status_code == 401
    )
    assert client.post("/v1/auth/refresh", json={"refresh_token": "hvr_garbage"}).status_code == 401


def test_logout_revokes_access_and_refresh_tokens(client: TestClient, platform: Platform) -> None:
    person = login(client, make_person(platform, "leaver"))
    assert client.get("/v1/me", headers=person.headers).status_code == 200
    assert client.post("/v1/auth/logout", headers=person.headers).status_code == 204
    gone = client.get("/v1/me", headers=person.headers)
    assert gone.status_code == 401
    assert gone.json()["error"]["code"] == "session_ended"
    assert (
        client.post("/v1/auth/refresh", json={"refresh_token": person.refresh}).status_code == 401
    )


def test_disabled_user_is_locked_out_at_once(
    client: TestClient, platform: Platform, operator: Person
) -> None:
    person = login(client, make_person(platform, "leaving"))
    disabled = client.patch(
        "/v1/users/leaving", json={"status": "disabled"}, headers=operator.headers
    )
    assert disabled.json()["status"] == "disabled"
    assert client.get("/v1/me", headers=person.headers).status_code == 401
    assert token(client, person).status_code == 401


def test_reset_credentials_issues_new_one_time_password(
    client: TestClient, platform: Platform, operator: Person
) -> None:
    make_person(platform, "forgetful")
    reset = client.patch(
        "/v1/users/forgetful", json={"reset_credentials": True}, headers=operator.headers
    )
    assert reset.status_code == 200
    body = reset.json()
    assert body["one_time_password"]
    assert body["totp_enrolled"] is False
    assert (
        client.get("/v1/users/forgetful", headers=operator.headers).json()["password_must_change"]
        is True
    )


def test_change_password_ends_other_sessions(client: TestClient, platform: Platform) -> None:
    person = make_person(platform, "changer")
    first = login(client, person)
    first_token = first.token
    second = login(client, person)
    changed = client.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "another good passphrase"},
        headers=second.headers,
    )
    assert changed.status_code == 204
    assert client.get("/v1/me", headers=second.headers).status_code == 200
    assert (
        client.get("/v1/me", headers={"Authorization": f"Bearer {first_token}"}).status_code == 401
    )
    wrong = client.post(
        "/v1/me/password",
        json={"current_password": "not it at all", "new_password": "yet another passphrase"},
        headers=second.headers,
    )
    assert wrong.status_code == 403


def test_access_token_lifetime_is_bounded(client: TestClient, platform: Platform) -> None:
    person = make_person(platform, "timely")
    response = token(client, person)
    assert response.json()["expires_at"] - time.time() <= 3600


def test_totp_secrets_are_encrypted_at_rest(platform: Platform) -> None:
    new = platform.run_as(
        "local:test",
        lambda trail: identity.create_user(
            trail.session, trail, platform.keyring, "secretive", enrol_totp=True
        ),
    )
    with platform.db.read() as session:
        user = session.get(User, new.user.id)
        assert user is not None
        assert user.totp_secret is not None
        assert new.totp_secret is not None
        assert new.totp_secret.encode() not in user.totp_secret
        assert totp.accept(new.totp_secret, totp.current_code(new.totp_secret), 0) is not None


def test_users_api_lists_and_reads(client: TestClient, operator: Person) -> None:
    assert client.get("/v1/users/olga", headers=operator.headers).json()["operator"] is True
    assert client.get("/v1/users/nobody", headers=operator.headers).status_code == 404
    taken = client.post("/v1/users", json={"username": "olga"}, headers=operator.headers)
    assert taken.status_code == 409
    bad = client.post("/v1/users", json={"username": "Bad Name"}, headers=operator.headers)
    assert bad.status_code == 422
    page = client.get("/v1/users", params={"limit": 1}, headers=operator.headers).json()
    assert page["next_after"] == page["items"][0]["username"]
