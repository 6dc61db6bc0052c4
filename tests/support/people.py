"""Users with known credentials, and logging them in with a fresh TOTP step each time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hvelv.identity import service as identity
from hvelv.platform import Platform
from hvelv.security import totp

PASSWORD = "correct horse battery staple"


@dataclass
class Person:
    username: str
    password: str
    totp_secret: str
    operator: bool = False
    last_step: int = 0
    token: str | None = None
    refresh: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def next_code(self) -> str:
        """A code for a TOTP step later than any used before (replays are refused)."""
        now = time.time()
        now_step = int(now // totp.PERIOD)
        # The previous step is only safe early in the current one: later, the request
        # could reach the server after the next boundary, when it is two steps old.
        earliest = now_step - 1 if now - now_step * totp.PERIOD < totp.PERIOD / 2 else now_step
        step = max(self.last_step + 1, earliest)
        if step > now_step + 1:
            time.sleep((step - 1) * totp.PERIOD - time.time() + 0.05)
        self.last_step = step
        return totp.current_code(self.totp_secret, step * totp.PERIOD)

    @property
    def headers(self) -> dict[str, str]:
        assert self.token is not None, "log in first"
        return {"Authorization": f"Bearer {self.token}"}


def make_person(platform: Platform, username: str, *, operator: bool = False) -> Person:
    new = platform.run_as(
        "local:test",
        lambda trail: identity.create_user(
            trail.session,
            trail,
            platform.keyring,
            username,
            is_operator=operator,
            enrol_totp=True,
            password=PASSWORD,
        ),
    )
    assert new.totp_secret is not None
    return Person(username, PASSWORD, new.totp_secret, operator)


def login(client: Any, person: Person, project: str | None = None) -> Person:
    body: dict[str, Any] = {
        "username": person.username,
        "password": person.password,
        "totp_code": person.next_code(),
    }
    if project:
        body["project"] = project
    response = client.post("/v1/auth/token", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    person.token = data["access_token"]
    person.refresh = data["refresh_token"]
    return person
