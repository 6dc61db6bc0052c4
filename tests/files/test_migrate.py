"""`hvelv storage migrate`: local disk → S3 (SeaweedFS) and back, every copy checked."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hvelv.config import Settings, load_settings
from hvelv.files import migrate
from hvelv.platform import Platform
from tests.files.support import download, upload
from tests.support.people import Person
from tests.support.seaweedfs import SeaweedFS
from tests.support.server import hvelv_command

MiB = 1024 * 1024


def s3_env(server: SeaweedFS, bucket: str) -> dict[str, str]:
    return {
        "HVELV_S3_ENDPOINT_URL": server.endpoint_url,
        "HVELV_S3_REGION": server.region,
        "HVELV_S3_ACCESS_KEY": server.access_key,
        "HVELV_S3_SECRET_KEY": server.secret_key,
        "HVELV_S3_BUCKET": bucket,
        "HVELV_S3_CREATE_BUCKET": "true",
    }


@pytest.fixture
def bucket() -> str:
    return f"hvelv-migrate-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(tmp_path: Path, database_for: Any, seaweedfs_s3: SeaweedFS, bucket: str) -> Settings:
    home = tmp_path / "home"
    return load_settings(
        home=home,
        database_url=database_for(home),
        audit_checkpoint_interval=10,
        s3_endpoint_url=seaweedfs_s3.endpoint_url,
        s3_region=seaweedfs_s3.region,
        s3_access_key=seaweedfs_s3.access_key,
        s3_secret_key=seaweedfs_s3.secret_key,
        s3_bucket=bucket,
        s3_create_bucket=True,
    )


def keys(platform: Platform, store: str) -> list[str]:
    return sorted(info.key for info in platform.store(store).list())


def test_there_and_back_again(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    files = {"a.bin": os.urandom(3 * MiB + 1), "b/c.txt": b"small", "empty": b""}
    for name, data in files.items():
        upload(client, project, h, data, name=name)
    client.delete(f"/v1/projects/{project}/files/files/content/empty", headers=h)  # in trash
    assert len(keys(platform, "local")) == 3
    copied: list[int] = []
    report = migrate.migrate_project(platform, project, "s3", "local:test", copied.append)
    assert report.ok, report.failures
    assert report.files_moved == 3
    assert sum(copied) == report.bytes_copied > 3 * MiB
    assert keys(platform, "local") == []
    assert len(keys(platform, "s3")) == 3
    for name in ("a.bin", "b/c.txt"):
        assert download(client, project, h, name).content == files[name]
    again = migrate.migrate_project(platform, project, "s3", "local:test")
    assert (again.files_moved, again.files_skipped) == (0, 3)
    back = migrate.migrate_project(platform, project, "local", "local:test")
    assert back.files_moved == 3
    assert keys(platform, "s3") == []
    assert download(client, project, h, "a.bin").content == files["a.bin"]
    events = client.get(
        f"/v1/projects/{project}/audit",
        params={"action": "storage.migrate"},
        headers=people["owner"].headers,
    ).json()["items"]
    assert len(events) == 6


def test_a_damaged_source_is_not_moved(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    data = os.urandom(MiB)
    upload(client, project, h, data, name="damaged.bin")
    (key,) = keys(platform, "local")
    path = platform.settings.home / "blobs" / "objects" / key
    raw = bytearray(path.read_bytes())
    raw[500] ^= 0xFF
    path.write_bytes(bytes(raw))
    report = migrate.migrate_project(platform, project, "s3", "local:test")
    assert not report.ok
    assert "damaged.bin" in report.failures[0]
    assert keys(platform, "s3") == []  # the bad copy was removed
    assert keys(platform, "local") == [key]  # and the row still names the source


def test_the_cli_command(
    client: TestClient,
    settings: Settings,
    people: dict[str, Person],
    project: str,
    seaweedfs_s3: SeaweedFS,
    bucket: str,
) -> None:
    upload(client, project, people["member"].headers, b"via the cli", name="cli.txt")
    env = {
        **os.environ,
        "HVELV_HOME": str(settings.home),
        "HVELV_DATABASE_URL": settings.resolved_database_url,
        **s3_env(seaweedfs_s3, bucket),
    }
    run = subprocess.run(
        [*hvelv_command(), "storage", "migrate", "--project", project, "--to", "s3", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["files_moved"] == 1
    bad = subprocess.run(
        [*hvelv_command(), "storage", "migrate", "--project", "p9999", "--to", "s3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert "no project p9999" in bad.stderr + bad.stdout
    assert download(client, project, people["member"].headers, "cli.txt").content == b"via the cli"
