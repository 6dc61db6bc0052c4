"""tus creation-defer-length: the length comes on a later PATCH; limits hold meanwhile.

tuspy cannot defer the length, so these are raw requests through the in-process client
(tus-js-client defers it in tests/files/test_browser.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from hvelv.app import create_app
from hvelv.files.models import Upload
from hvelv.platform import Platform
from tests.files.support import TUS, create, download, metadata, patch, sha256, uploads_url
from tests.files.test_links import make_link
from tests.support.people import Person

MiB = 1024 * 1024
DEFER = {"Upload-Defer-Length": "1"}


def create_deferred(
    client: TestClient, pid: str, headers: dict[str, str], name: str = "stream.bin", **kw: Any
) -> Any:
    area = kw.pop("area", "files")
    return client.post(
        uploads_url(pid, area),
        headers={**headers, **TUS, **DEFER, "Upload-Metadata": metadata(filename=name), **kw},
    )


def head(client: TestClient, url: str, headers: dict[str, str]) -> Any:
    response = client.head(url, headers={**headers, **TUS})
    assert response.status_code == 200, response.headers
    return response


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert response.headers["Tus-Resumable"] == "1.0.0"


def listing(client: TestClient, pid: str, headers: dict[str, str], area: str = "files") -> dict:
    items = client.get(f"/v1/projects/{pid}/files/{area}", headers=headers).json()["items"]
    return {item["path"]: item for item in items}


def test_length_declared_by_the_last_patch(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    data = os.urandom(9 * MiB + 123)  # several 4 MiB segments, ends mid-segment
    created = create_deferred(client, project, h)
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    state = head(client, url, h)
    assert state.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in state.headers
    assert state.headers["Upload-Offset"] == "0"
    # chunks that end inside a segment and on no boundary at all, length still unknown
    offset = 0
    for size in (3 * MiB + 5, 5 * MiB):
        sent = patch(client, url, h, offset, data[offset : offset + size])
        assert sent.status_code == 204, sent.text
        offset += size
        assert sent.headers["Upload-Offset"] == str(offset)
        state = head(client, url, h)
        assert state.headers["Upload-Defer-Length"] == "1"
        assert state.headers["Upload-Offset"] == str(offset)
    assert "stream.bin" not in listing(client, project, h)
    last = patch(client, url, h, offset, data[offset:], **{"Upload-Length": str(len(data))})
    assert last.status_code == 204, last.text
    assert last.headers["Upload-Offset"] == str(len(data))
    done = head(client, url, h)
    assert done.headers["Upload-Length"] == str(len(data))
    assert "Upload-Defer-Length" not in done.headers
    assert download(client, project, h, "stream.bin").content == data
    stored = listing(client, project, h)["stream.bin"]
    assert (stored["size"], stored["sha256"]) == (len(data), sha256(data))


def test_length_declared_early_then_normal_patches(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    data = os.urandom(100_000)
    url = create_deferred(client, project, h).headers["Location"]
    assert patch(client, url, h, 0, data[:10]).status_code == 204
    # the length comes with a PATCH that does not finish the upload ...
    first = patch(client, url, h, 10, data[10:50_000], **{"Upload-Length": str(len(data))})
    assert first.status_code == 204, first.text
    assert head(client, url, h).headers["Upload-Length"] == str(len(data))
    # ... a client repeating the same length (a retried request) is fine; later PATCHes
    # need not repeat it
    again = patch(client, url, h, 50_000, data[50_000:60_000], **{"Upload-Length": str(len(data))})
    assert again.status_code == 204, again.text
    rest = patch(client, url, h, 60_000, data[60_000:])
    assert rest.status_code == 204
    assert download(client, project, h, "stream.bin").content == data


def test_empty_and_announced_at_the_end(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    empty = create_deferred(client, project, h, name="empty.bin").headers["Location"]
    ended = patch(client, empty, h, 0, b"", **{"Upload-Length": "0"})
    assert ended.status_code == 204, ended.text
    assert download(client, project, h, "empty.bin").content == b""
    # all bytes first, then a body-less PATCH that only tells the length
    url = create_deferred(client, project, h, name="late.bin").headers["Location"]
    assert patch(client, url, h, 0, b"abcdef").status_code == 204
    assert listing(client, project, h).get("late.bin") is None
    told = patch(client, url, h, 6, b"", **{"Upload-Length": "6"})
    assert told.status_code == 204, told.text
    assert download(client, project, h, "late.bin").content == b"abcdef"


def test_creation_with_upload_and_deferred_length(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    created = client.post(
        uploads_url(project),
        content=b"first part",
        headers={
            **h,
            **TUS,
            **DEFER,
            "Upload-Metadata": metadata(filename="withbody.txt"),
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert created.status_code == 201, created.text
    assert created.headers["Upload-Offset"] == "10"
    url = created.headers["Location"]
    assert patch(client, url, h, 10, b", second", **{"Upload-Length": "18"}).status_code == 204
    assert download(client, project, h, "withbody.txt").content == b"first part, second"


def test_bad_length_headers_are_refused_and_change_nothing(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    both = create_deferred(client, project, h, **{"Upload-Length": "10"})
    assert_error(both, 400, "invalid_header")
    for bad in ("0", "2", "yes", ""):
        assert_error(
            create_deferred(client, project, h, **{"Upload-Defer-Length": bad}),
            400,
            "invalid_header",
        )
    final = create_deferred(client, project, h, **{"Upload-Concat": "final;/x/" + "0" * 32})
    assert_error(final, 400, "invalid_concat")
    nameless = client.post(uploads_url(project), headers={**h, **TUS, **DEFER})
    assert nameless.status_code == 422
    assert nameless.json()["error"]["code"] == "missing_filename"

    url = create_deferred(client, project, h).headers["Location"]
    assert patch(client, url, h, 0, b"12345").status_code == 204
    for value in ("ten", "-1", "1e3", "99999999999999999999"):
        assert_error(
            patch(client, url, h, 5, b"x", **{"Upload-Length": value}), 400, "invalid_header"
        )
    shorter = patch(client, url, h, 5, b"", **{"Upload-Length": "4"})
    assert_error(shorter, 400, "invalid_header")
    state = head(client, url, h)
    assert (state.headers["Upload-Offset"], state.headers["Upload-Defer-Length"]) == ("5", "1")
    # set once; another value later is refused and nothing of that request is stored
    assert patch(client, url, h, 5, b"678", **{"Upload-Length": "10"}).status_code == 204
    changed = patch(client, url, h, 8, b"9", **{"Upload-Length": "11"})
    assert_error(changed, 400, "upload_length_set")
    state = head(client, url, h)
    assert (state.headers["Upload-Offset"], state.headers["Upload-Length"]) == ("8", "10")
    # more than the declared length: the excess is refused as for any upload
    over = patch(client, url, h, 8, b"9AB")
    assert_error(over, 413, "beyond_upload_length")
    assert download(client, project, h, "stream.bin").content == b"123456789A"


@pytest.fixture
def small_files(platform: Platform) -> Iterator[TestClient]:
    """The same database, with a 1000-byte maximum file size."""
    limited = Platform.build(
        platform.settings.model_copy(update={"max_file_bytes": 1000}),
        platform.db,
        platform.keyring,
    )
    with TestClient(create_app(limited)) as client:
        yield client


def test_maximum_file_size_before_each_chunk_and_when_declared(
    small_files: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    client = small_files
    url = create_deferred(client, project, h).headers["Location"]
    assert patch(client, url, h, 0, b"a" * 600).status_code == 204
    # a chunk that would pass the maximum is refused whole (its size is announced)
    over = patch(client, url, h, 600, b"b" * 401)
    assert_error(over, 413, "file_too_large")
    assert head(client, url, h).headers["Upload-Offset"] == "600"
    assert_error(
        patch(client, url, h, 600, b"", **{"Upload-Length": "1001"}), 413, "file_too_large"
    )
    assert head(client, url, h).headers["Upload-Defer-Length"] == "1"
    # a chunked body (no Content-Length) is cut at the maximum; what fitted is kept
    streamed = client.patch(
        url,
        content=iter([b"c" * 300, b"d" * 300]),
        headers={
            **h,
            **TUS,
            "Upload-Offset": "600",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert_error(streamed, 413, "file_too_large")
    assert streamed.headers["Upload-Offset"] == "1000"
    assert head(client, url, h).headers["Upload-Offset"] == "1000"
    assert patch(client, url, h, 1000, b"", **{"Upload-Length": "1000"}).status_code == 204
    assert (
        download(client, project, h, "stream.bin").content == b"a" * 600 + b"c" * 300 + b"d" * 100
    )


def test_quota_counts_what_a_deferred_upload_received(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    operator = people["operator"].headers
    quota = client.patch(
        f"/v1/projects/{project}/admin", json={"quota_bytes": 1000}, headers=operator
    )
    assert quota.status_code == 200, quota.text
    url = create_deferred(client, project, h).headers["Location"]
    assert patch(client, url, h, 0, b"a" * 600).status_code == 204
    assert_error(create(client, project, h, 401, name="other"), 413, "quota_exceeded")
    assert_error(patch(client, url, h, 600, b"b" * 401), 413, "quota_exceeded")
    assert_error(
        patch(client, url, h, 600, b"", **{"Upload-Length": "1001"}), 413, "quota_exceeded"
    )
    assert head(client, url, h).headers["Upload-Offset"] == "600"
    # a PATCH that crashed while holding a reservation: once its lease is stale, the next
    # request settles the reservation to what is stored
    with platform.db.write() as session:
        session.execute(
            update(Upload)
            .where(Upload.length.is_(None))
            .values(
                reserved=900,
                lease_owner="gone-node/abc/def",
                lease_until=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
    assert_error(create(client, project, h, 300, name="other"), 413, "quota_exceeded")
    assert head(client, url, h).headers["Upload-Offset"] == "600"
    other = create(client, project, h, 300, name="other")
    assert other.status_code == 201, other.text
    # the declared length now counts in full
    assert patch(client, url, h, 600, b"b" * 100, **{"Upload-Length": "700"}).status_code == 204
    assert_error(create(client, project, h, 1, name="third"), 413, "quota_exceeded")


def test_a_link_allowance_holds_for_deferred_uploads(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    owner = people["owner"].headers
    link = make_link(client, project, owner, max_uses=2, max_bytes=10)
    bearer = {"Authorization": f"Bearer {link['token']}"}
    first = create_deferred(client, project, bearer, name="a", area="import").headers["Location"]
    second = create_deferred(client, project, bearer, name="b", area="import").headers["Location"]
    assert patch(client, first, bearer, 0, b"123456").status_code == 204
    assert_error(patch(client, second, bearer, 0, b"12345"), 413, "link_size_exceeded")
    assert patch(client, second, bearer, 0, b"1234").status_code == 204
    assert_error(
        patch(client, first, bearer, 6, b"7", **{"Upload-Length": "7"}), 413, "link_size_exceeded"
    )
    # both uses are spent, but declaring a length is no new use
    assert patch(client, first, bearer, 6, b"", **{"Upload-Length": "6"}).status_code == 204
    assert patch(client, second, bearer, 4, b"", **{"Upload-Length": "4"}).status_code == 204
    links = client.get(f"/v1/projects/{project}/upload-links", headers=owner).json()
    assert (links[0]["uses"], links[0]["bytes_reserved"]) == (2, 10)
    got = download(client, project, owner, "a", area="import")
    assert got.content == b"123456"


def test_a_deferred_upload_is_capped_by_the_parts_its_segments_allow(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    """The segment size is chosen before the length is known: 9,900 parts of at least one
    4 MiB segment each, although HVELV_MAX_FILE_BYTES (1 TiB) would allow more."""
    h = people["member"].headers
    cap = 9_900 * 4 * MiB
    url = create_deferred(client, project, h).headers["Location"]
    too_big = patch(client, url, h, 0, b"", **{"Upload-Length": str(cap + 1)})
    assert_error(too_big, 413, "file_too_large")
    assert str(cap) in too_big.json()["error"]["message"]
    fits = patch(client, url, h, 0, b"", **{"Upload-Length": str(cap)})
    assert fits.status_code == 204, fits.text
    assert head(client, url, h).headers["Upload-Length"] == str(cap)
    assert client.delete(url, headers={**h, **TUS}).status_code == 204
