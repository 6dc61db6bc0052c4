"""The same file routes on S3 (a real SeaweedFS): multipart parts, tails, reconciliation."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from hvelv.config import Settings, load_settings
from hvelv.files import uploads
from hvelv.files.models import Upload
from hvelv.platform import Platform
from tests.files.support import (
    TUS,
    concatenate,
    create,
    download,
    metadata,
    patch,
    sha256,
    upload,
    uploads_url,
)
from tests.support.people import Person
from tests.support.seaweedfs import SeaweedFS

MiB = 1024 * 1024


@pytest.fixture
def settings(tmp_path: Path, database_for: Any, seaweedfs_s3: SeaweedFS) -> Settings:
    home = tmp_path / "home"
    return load_settings(
        home=home,
        database_url=database_for(home),
        audit_checkpoint_interval=10,
        storage_backend="s3",
        s3_endpoint_url=seaweedfs_s3.endpoint_url,
        s3_region=seaweedfs_s3.region,
        s3_access_key=seaweedfs_s3.access_key,
        s3_secret_key=seaweedfs_s3.secret_key,
        s3_bucket=f"hvelv-files-{uuid.uuid4().hex[:8]}",
        s3_create_bucket=True,
    )


def test_round_trip_in_chunks_with_ranges(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    data = os.urandom(17 * MiB + 9)
    upload(client, project, h, data, name="s3.bin", chunk=3 * MiB + 1)
    assert download(client, project, h, "s3.bin").content == data
    part = download(client, project, h, "s3.bin", Range=f"bytes={5 * MiB - 3}-{11 * MiB}")
    assert part.status_code == 206
    assert part.content == data[5 * MiB - 3 : 11 * MiB + 1]
    assert list(platform.store().list_uploads()) == []
    keys = [info.key for info in platform.store().list()]
    assert len(keys) == 1  # one blob, no tail left behind
    assert data[:4096] not in platform.store().read_bytes(keys[0])


def test_a_crashed_writer_is_rebuilt_from_the_stored_parts(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    data = os.urandom(13 * MiB + 5)
    url = create(client, project, h, len(data), name="crash.bin").headers["Location"]
    first = 7 * MiB + 11
    assert patch(client, url, h, 0, data[:first]).status_code == 204
    # the process that held the writer is gone and left a lease behind
    uploads._LIVE.clear()
    with platform.db.write() as session:
        session.execute(
            update(Upload).values(
                lease_owner=f"{platform.settings.node_name}/oldboot00000/x",
                lease_until=datetime.now(UTC) + timedelta(minutes=5),
            )
        )
    head = client.head(url, headers={**h, **TUS})
    assert head.headers["Upload-Offset"] == str(first)
    assert patch(client, url, h, first, data[first:]).status_code == 204
    listed = client.get(f"/v1/projects/{project}/files/files", headers=h).json()["items"]
    assert listed[0]["sha256"] == sha256(data)  # computed from the stored blob
    assert download(client, project, h, "crash.bin").content == data


def test_concatenation_and_termination_on_s3(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    data = os.urandom(6 * MiB)
    urls = []
    for piece in (data[: 2 * MiB], data[2 * MiB :]):
        made = client.post(
            uploads_url(project),
            headers={**h, **TUS, "Upload-Length": str(len(piece)), "Upload-Concat": "partial"},
        )
        assert patch(client, made.headers["Location"], h, 0, piece).status_code == 204
        urls.append(made.headers["Location"])
    final = concatenate(client, uploads_url(project), h, urls, "joined.bin")
    assert final.status_code == 201, final.text
    assert download(client, project, h, "joined.bin").content == data
    doomed = create(client, project, h, 10 * MiB, name="doomed.bin").headers["Location"]
    patch(client, doomed, h, 0, os.urandom(6 * MiB))
    assert client.delete(doomed, headers={**h, **TUS}).status_code == 204
    assert list(platform.store().list_uploads()) == []


def test_deferred_length_on_s3_after_a_crash(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    """Upload-Defer-Length with S3's 5 MiB minimum part size, continued by a new writer."""
    h = people["member"].headers
    data = os.urandom(12 * MiB + 3)
    made = client.post(
        uploads_url(project),
        headers={
            **h,
            **TUS,
            "Upload-Defer-Length": "1",
            "Upload-Metadata": metadata(filename="deferred.bin"),
        },
    )
    assert made.status_code == 201, made.text
    url = made.headers["Location"]
    first = 6 * MiB + 7
    assert patch(client, url, h, 0, data[:first]).status_code == 204
    uploads._LIVE.clear()  # the process that held the writer is gone
    state = client.head(url, headers={**h, **TUS})
    assert (state.headers["Upload-Offset"], state.headers["Upload-Defer-Length"]) == (
        str(first),
        "1",
    )
    last = patch(client, url, h, first, data[first:], **{"Upload-Length": str(len(data))})
    assert last.status_code == 204, last.text
    assert download(client, project, h, "deferred.bin").content == data
    assert list(platform.store().list_uploads()) == []
