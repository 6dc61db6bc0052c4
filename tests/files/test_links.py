"""Upload links: deliver into import without an account, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from hvelv.files.models import UploadLink
from hvelv.platform import Platform
from tests.files.support import TUS, concatenate, create, download, metadata, patch, upload
from tests.support.people import Person


def make_link(client: TestClient, pid: str, h: dict[str, str], **body: object) -> dict:
    response = client.post(
        f"/v1/projects/{pid}/upload-links", json={"label": "lab", **body}, headers=h
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_link_delivers_into_import_only(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    link = make_link(client, project, people["data_manager"].headers, max_uses=2)
    assert link["token"].startswith("hvl_")
    assert link["upload_url"].endswith(f"/v1/projects/{project}/files/import/uploads")
    bearer = {"Authorization": f"Bearer {link['token']}"}
    upload(client, project, bearer, b"lab results", name="results.csv", area="import")
    got = download(client, project, people["member"].headers, "results.csv", area="import")
    assert got.content == b"lab results"
    # the link cannot read, list, or write other areas or projects
    assert download(client, project, bearer, "results.csv", area="import").status_code == 403
    assert client.get(f"/v1/projects/{project}/files/import", headers=bearer).status_code == 403
    assert create(client, project, bearer, 1, area="files").status_code == 403
    other = people["outsider"].extra["project"]
    assert create(client, other, bearer, 1, area="import").status_code == 403
    assert client.get("/v1/me", headers=bearer).status_code == 403
    # uses are counted per upload started
    upload(client, project, bearer, b"second", name="second.csv", area="import")
    used_up = create(client, project, bearer, 1, name="third.csv", area="import")
    assert used_up.status_code == 403
    assert used_up.json()["error"]["code"] == "link_used_up"
    listed = client.get(
        f"/v1/projects/{project}/upload-links", headers=people["owner"].headers
    ).json()
    assert listed[0]["uses"] == 2
    assert "token" not in listed[0]


def test_size_limit_expiry_and_revocation(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["owner"].headers
    link = make_link(client, project, h, max_bytes=10)
    bearer = {"Authorization": f"Bearer {link['token']}"}
    too_big = create(client, project, bearer, 11, area="import")
    assert too_big.status_code == 413
    url = create(client, project, bearer, 5, area="import").headers["Location"]
    revoked = client.delete(f"/v1/projects/{project}/upload-links/{link['id']}", headers=h)
    assert revoked.status_code == 200
    assert revoked.json()["revoked"]
    refused = patch(client, url, bearer, 0, b"12345")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "link_expired"
    second = make_link(client, project, h)
    with platform.db.write() as session:
        session.execute(
            update(UploadLink)
            .where(UploadLink.id == second["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    expired = create(
        client, project, {"Authorization": f"Bearer {second['token']}"}, 1, area="import"
    )
    assert expired.status_code == 401
    forged = second["token"][:-4] + "AAAA"
    assert create(client, project, {"Authorization": f"Bearer {forged}"}, 1).status_code == 401


def test_only_owners_and_data_managers_manage_links(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    body = {"label": "x"}
    for who in ("member", "auditor"):
        response = client.post(
            f"/v1/projects/{project}/upload-links", json=body, headers=people[who].headers
        )
        assert response.status_code == 403
    too_long = client.post(
        f"/v1/projects/{project}/upload-links",
        json={"label": "x", "expires_in_hours": 10_000},
        headers=people["owner"].headers,
    )
    assert too_long.status_code == 422


def test_a_parallel_upload_through_a_link_is_one_use(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    link = make_link(client, project, people["owner"].headers, max_uses=1, max_bytes=100)
    bearer = {"Authorization": f"Bearer {link['token']}"}
    url = f"/v1/projects/{project}/files/import/uploads"
    partials = []
    for piece in (b"first half ", b"second half"):
        made = client.post(
            url,
            headers={**bearer, **TUS, "Upload-Length": str(len(piece)), "Upload-Concat": "partial"},
        )
        assert made.status_code == 201, made.text
        assert patch(client, made.headers["Location"], bearer, 0, piece).status_code == 204
        partials.append(made.headers["Location"])
    final = concatenate(client, url, bearer, partials, "both.txt")
    assert final.status_code == 201, final.text
    got = download(client, project, people["member"].headers, "both.txt", area="import")
    assert got.content == b"first half second half"
    assert create(client, project, bearer, 1, area="import").status_code == 403  # used up


def test_browser_null_relative_path_falls_back_to_the_file_name(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    response = client.post(
        f"/v1/projects/{project}/files/files/uploads",
        headers={
            **h,
            **TUS,
            "Upload-Length": "0",
            "Upload-Metadata": metadata(filename="photo.jpg", relativePath="null"),
        },
    )
    assert response.status_code == 201
    assert download(client, project, h, "photo.jpg").status_code == 200


def test_booleans_are_not_numbers(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    for field in ("max_uses", "max_bytes", "expires_in_hours"):
        response = client.post(
            f"/v1/projects/{project}/upload-links",
            json={"label": "x", field: True},
            headers=people["owner"].headers,
        )
        assert response.status_code == 422, (field, response.text)
