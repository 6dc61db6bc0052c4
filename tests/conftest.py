"""Shared fixtures: a platform on SQLite or PostgreSQL, an in-process client, people."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hvelv.app import create_app
from hvelv.config import Settings, load_settings
from hvelv.crypto.keyring import create_keyring
from hvelv.db import migrate
from hvelv.db.engine import Database
from hvelv.db.models import Base
from hvelv.platform import Platform
from tests.support.backends import database_url, missing
from tests.support.people import Person, login, make_person
from tests.support.seaweedfs import SeaweedFS, WeedNotFoundError, find_weed, seaweedfs


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    """argon2id with minimal cost in tests only (as Django tests swap their hasher):
    production parameters cost ~170 ms per hash here and the suite hashes hundreds."""
    from hvelv.security import passwords

    original = passwords._HASHER
    passwords._HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    passwords._HASHER = original


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A throw-away PostgreSQL database for this test session (when selected)."""
    base = database_url()
    if base is None:
        yield None
        return
    url = make_url(base)
    name = f"hvelv_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        missing(f"PostgreSQL at {url.host}:{url.port} unavailable: {exc.__class__.__name__}")
    test_url = url.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(test_url)
    migrate.upgrade(engine)
    engine.dispose()
    yield test_url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def seaweedfs_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real SeaweedFS S3 endpoint for the whole session."""
    try:
        find_weed()
    except WeedNotFoundError as exc:
        missing(str(exc))
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "hvelv.db"
    engine = create_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables if t.name != "audit_head")
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(
            text(
                "UPDATE audit_head SET seq = 0, hash = :z, frontier = '[]', key_id = NULL, "
                "signature = NULL"
            ),
            {"z": bytes(32)},
        )
    engine.dispose()


@pytest.fixture
def database_for(postgres_url: str | None, sqlite_template: Path) -> Any:
    """Returns a function giving a fresh migrated database URL inside a home directory."""

    def make(home: Path) -> str:
        if postgres_url is not None:
            _reset_postgres(postgres_url)
            return postgres_url
        home.mkdir(parents=True, exist_ok=True)
        target = home / "hvelv.db"
        shutil.copy(sqlite_template, target)
        return f"sqlite:///{target}"

    return make


@pytest.fixture
def settings(tmp_path: Path, database_for: Any) -> Settings:
    home = tmp_path / "home"
    url = database_for(home)
    return load_settings(home=home, database_url=url, audit_checkpoint_interval=10)


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    keyring = create_keyring(settings.home)
    db = Database(settings.resolved_database_url)
    platform = Platform.build(settings, db, keyring)
    yield platform
    platform.close()


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform)) as test_client:
        yield test_client


@pytest.fixture
def operator(platform: Platform, client: TestClient) -> Person:
    return login(client, make_person(platform, "olga", operator=True))


PROJECT_BODY = {
    "name": "Heart study",
    "ethics_ref": "REK 2026/123",
    "approval_start": "2020-01-01",
    "approval_end": "2099-12-31",
    "purposes": [{"code": "DUO:0000006"}],
}


@pytest.fixture
def project(client: TestClient, operator: Person) -> str:
    response = client.post("/v1/projects", json=PROJECT_BODY, headers=operator.headers)
    assert response.status_code == 201, response.text
    pid: str = response.json()["pid"]
    return pid


@pytest.fixture
def people(
    platform: Platform, client: TestClient, operator: Person, project: str
) -> dict[str, Person]:
    """One logged-in person per project role, plus an outsider with their own project."""
    team: dict[str, Person] = {"operator": operator}
    for role in ("owner", "data_manager", "member", "auditor"):
        person = make_person(platform, role.replace("_", ""))
        response = client.post(
            f"/v1/projects/{project}/members",
            json={"username": person.username, "role": role},
            headers=operator.headers,
        )
        assert response.status_code == 201, response.text
        team[role] = login(client, person)
    other = client.post("/v1/projects", json=PROJECT_BODY, headers=operator.headers).json()["pid"]
    outsider = make_person(platform, "outsider")
    client.post(
        f"/v1/projects/{other}/members",
        json={"username": "outsider", "role": "owner"},
        headers=operator.headers,
    )
    team["outsider"] = login(client, outsider)
    team["outsider"].extra["project"] = other
    return team


CHROMIUM = "/usr/bin/chromium"  # Debian's package: browsers cannot be downloaded here


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module (the portal's pages, the browser tus clients).

    Module scope, not session: while Playwright's sync API is open it keeps an event loop
    running in the main thread, and every later test that runs a loop of its own there
    (``asyncio.run``, a second Playwright) would fail with "another loop is running"."""
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright  # only sessions with browser tests

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """At the end of each test module, no event loop may be left running in the main thread
    (Playwright's sync API keeps one while open): every later test that runs a loop of its own
    would fail with "another loop is running", far from the cause."""
    if nextitem is not None and nextitem.module is item.module:  # type: ignore[attr-defined]
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    pytest.fail(f"{item.nodeid}: an event loop is still running in the main thread")
