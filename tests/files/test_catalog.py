"""Listing, moves, the trash, restore and purge."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from hvelv.app import create_app
from hvelv.files import maintenance
from hvelv.files.models import Upload
from hvelv.platform import Platform
from tests.files.support import create, download, sha256, upload
from tests.support.people import Person


def files_url(pid: str, area: str = "files") -> str:
    return f"/v1/projects/{pid}/files/{area}"


def paths(client: TestClient, pid: str, h: dict[str, str], **params: object) -> list[str]:
    response = client.get(files_url(pid), headers=h, params=params)
    assert response.status_code == 200, response.text
    return [item["path"] for item in response.json()["items"]]


def test_listing_sorts_filters_and_pages(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    for name, size in (("b.txt", 3), ("a/x.txt", 1), ("a/y.txt", 5), ("c_d.txt", 2)):
        upload(client, project, h, b"z" * size, name=name)
    assert paths(client, project, h) == ["a/x.txt", "a/y.txt", "b.txt", "c_d.txt"]
    assert paths(client, project, h, sort="size", order="desc") == [
        "a/y.txt",
        "b.txt",
        "c_d.txt",
        "a/x.txt",
    ]
    assert paths(client, project, h, prefix="a/") == ["a/x.txt", "a/y.txt"]
    assert paths(client, project, h, prefix="c_") == ["c_d.txt"]  # _ is not a wildcard
    assert paths(client, project, h, prefix="c%") == []
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get(files_url(project), headers=h, params=params).json()
        seen += [item["path"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a/x.txt", "a/y.txt", "b.txt", "c_d.txt"]
    bad = client.get(files_url(project), headers=h, params={"cursor": "nonsense"})
    assert bad.status_code == 422
    traversal = client.get(files_url(project), headers=h, params={"prefix": "../"})
    assert traversal.status_code == 422


def test_move_files_and_folders(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    for name in ("raw/one.csv", "raw/two.csv", "notes.txt"):
        upload(client, project, h, name.encode(), name=name)
    moved = client.post(
        files_url(project) + "/move",
        json={"source": "notes.txt", "target": "doc/notes.txt"},
        headers=h,
    )
    assert moved.status_code == 200, moved.text
    folder = client.post(
        files_url(project) + "/move", json={"source": "raw", "target": "clean"}, headers=h
    )
    assert [m["path"] for m in folder.json()["moved"]] == ["clean/one.csv", "clean/two.csv"]
    assert paths(client, project, h) == ["clean/one.csv", "clean/two.csv", "doc/notes.txt"]
    assert download(client, project, h, "clean/two.csv").content == b"raw/two.csv"
    clash = client.post(
        files_url(project) + "/move",
        json={"source": "clean/one.csv", "target": "clean/two.csv"},
        headers=h,
    )
    assert clash.status_code == 409
    missing = client.post(
        files_url(project) + "/move", json={"source": "nope", "target": "x"}, headers=h
    )
    assert missing.status_code == 404
    into_itself = client.post(
        files_url(project) + "/move", json={"source": "clean", "target": "clean/sub"}, headers=h
    )
    assert into_itself.status_code == 422
    escape = client.post(
        files_url(project) + "/move", json={"source": "doc/notes.txt", "target": "../x"}, headers=h
    )
    assert escape.status_code == 422


def test_delete_restore_and_purge(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    upload(client, project, h, b"keep me", name="precious.txt")
    deleted = client.delete(files_url(project) + "/content/precious.txt", headers=h)
    assert deleted.status_code == 200
    assert paths(client, project, h) == []
    assert download(client, project, h, "precious.txt").status_code == 404
    trash = client.get(files_url(project) + "/trash", headers=h).json()["items"]
    assert [t["path"] for t in trash] == ["precious.txt"]
    file_id = trash[0]["id"]
    # a new file took the path: restoring needs another name
    upload(client, project, h, b"newer", name="precious.txt")
    clash = client.post(files_url(project) + f"/trash/{file_id}/restore", headers=h)
    assert clash.status_code == 409
    restored = client.post(
        files_url(project) + f"/trash/{file_id}/restore", json={"to": "old/precious.txt"}, headers=h
    )
    assert restored.status_code == 200, restored.text
    assert download(client, project, h, "old/precious.txt").content == b"keep me"
    # delete again and let the retention pass: the maintenance sweep purges it
    client.delete(files_url(project) + "/content/old/precious.txt", headers=h)
    blobs_before = sum(1 for _ in platform.store().list())
    swept = maintenance.sweep(platform, datetime.now(UTC) + timedelta(days=31))
    assert swept.files_purged == 1
    assert sum(1 for _ in platform.store().list()) == blobs_before - 1
    assert client.get(files_url(project) + "/trash", headers=h).json()["items"] == []
    gone = client.post(files_url(project) + f"/trash/{file_id}/restore", headers=h)
    assert gone.status_code == 404


def test_sweep_expires_unfinished_uploads(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    url = create(client, project, h, 100).headers["Location"]
    client.patch(
        url,
        content=b"x" * 10,
        headers={
            **h,
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert maintenance.sweep(platform).uploads_expired == 0
    swept = maintenance.sweep(platform, datetime.now(UTC) + timedelta(days=4))
    assert swept.uploads_expired == 1
    assert list(platform.store().list_uploads()) == []
    assert list(platform.store().list()) == []


def test_the_audit_log_names_file_events_with_their_hash(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    upload(client, project, h, b"audited", name="a.txt")
    download(client, project, h, "a.txt")
    client.post(
        files_url(project) + "/move", json={"source": "a.txt", "target": "b.txt"}, headers=h
    )
    client.delete(files_url(project) + "/content/b.txt", headers=h)
    events = client.get(
        f"/v1/projects/{project}/audit", headers=people["owner"].headers, params={"limit": 100}
    ).json()["items"]
    by_action = {e["action"]: e for e in events}
    for action in ("files.upload", "files.download", "files.move", "files.delete"):
        assert action in by_action, action
        assert by_action[action]["details"]["sha256"] == sha256(b"audited")


def test_the_server_sweeps_in_the_background(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    create(client, project, h, 100)
    with platform.db.write() as session:
        session.execute(update(Upload).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    fast = Platform.build(
        platform.settings.model_copy(update={"maintenance_interval_seconds": 1}),
        platform.db,
        platform.keyring,
    )
    with TestClient(create_app(fast)):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with platform.db.read() as session:
                if session.scalar(select(func.count()).select_from(Upload)) == 0:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the expired upload was not swept")
