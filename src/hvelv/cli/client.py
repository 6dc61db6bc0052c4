"""HTTP client of the REST API with a stored login (mode 0600) and automatic refresh."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from hvelv.cli.output import fail


def config_dir() -> Path:
    explicit = os.environ.get("HVELV_CLI_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hvelv"


def session_file() -> Path:
    return config_dir() / "session.json"


@dataclass
class StoredLogin:
    url: str
    username: str
    access_token: str
    refresh_token: str
    expires_at: int
    scope_project: str | None = None

    def save(self) -> None:
        directory = config_dir()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = session_file()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle)
        os.replace(tmp, path)

    @classmethod
    def load(cls) -> StoredLogin | None:
        path = session_file()
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            return None

    @staticmethod
    def forget() -> None:
        session_file().unlink(missing_ok=True)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        raise ApiError(response.status_code, error["code"], error["message"], error.get("details"))
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, "http_error", response.text[:200]) from None


class Client:
    """Calls the API as the stored login, refreshing the access token when it expires."""

    def __init__(self, login: StoredLogin, timeout: float = 30.0) -> None:
        self.login = login
        self.http = httpx.Client(base_url=login.url, timeout=timeout)
        self._lock = threading.Lock()  # one refresh at a time (a used refresh token ends it)

    @classmethod
    def from_store(cls) -> Client:
        login = StoredLogin.load()
        if login is None:
            fail("not logged in; run `hvelv login` first")
        return cls(login)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refresh(self) -> None:
        response = self.http.post(
            "/v1/auth/refresh", json={"refresh_token": self.login.refresh_token}
        )
        if response.status_code != 200:
            StoredLogin.forget()
            fail("your session has ended; run `hvelv login` again")
        data = response.json()
        self.login.access_token = data["access_token"]
        self.login.refresh_token = data["refresh_token"]
        self.login.expires_at = data["expires_at"]
        self.login.save()

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header, refreshing the access token first when it is due."""
        with self._lock:
            if self.login.expires_at - 30 < time.time():
                self._refresh()
            return {"Authorization": f"Bearer {self.login.access_token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = self.auth_headers()
        try:
            response = self.http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            fail(f"cannot reach {self.login.url}: {exc}")
        raise_for(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def call(method: str, path: str, **kwargs: Any) -> Any:
    """One request as the stored login; the connection is closed afterwards."""
    with Client.from_store() as client:
        return client.request(method, path, **kwargs)
