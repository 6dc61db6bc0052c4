"""tus 1.0.0 through the in-process client: core protocol and every extension we announce."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from hvelv.crypto.segments import IntegrityError
from hvelv.files import api, uploads
from hvelv.files.models import Upload
from hvelv.platform import Platform
from tests.files.support import (
    OCTETS,
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

MiB = 1024 * 1024


def listing(client: TestClient, pid: str, headers: dict[str, str], area: str = "files") -> list:
    response = client.get(f"/v1/projects/{pid}/files/{area}", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_options_announce_the_protocol(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    response = client.options(uploads_url(project), headers=people["member"].headers)
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    extensions = set(response.headers["Tus-Extension"].split(","))
    assert extensions == {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "checksum",
        "expiration",
        "concatenation",
    }
    assert "sha256" in response.headers["Tus-Checksum-Algorithm"].split(",")
    assert int(response.headers["Tus-Max-Size"]) > 0


def test_round_trips_of_0_1_and_many_segment_files(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    sizes = {"empty": 0, "one": 1, "multi": 9 * MiB + 17}
    contents = {name: os.urandom(size) for name, size in sizes.items()}
    for name, data in contents.items():
        upload(client, project, h, data, name=name, chunk=3 * MiB + 5)
    by_path = {item["path"]: item for item in listing(client, project, h)}
    for name, data in contents.items():
        assert by_path[name]["size"] == len(data)
        assert by_path[name]["sha256"] == sha256(data)
        response = download(client, project, h, name)
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["X-Content-SHA256"] == sha256(data)


def test_head_reports_offset_length_metadata_and_expiry(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    created = create(client, project, h, 100, name="half.bin")
    url = created.headers["Location"]
    assert "Upload-Expires" in created.headers
    assert patch(client, url, h, 0, b"x" * 40).headers["Upload-Offset"] == "40"
    head = client.head(url, headers={**h, **TUS})
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "40"
    assert head.headers["Upload-Length"] == "100"
    assert head.headers["Upload-Metadata"] == metadata(filename="half.bin")
    assert head.headers["Cache-Control"] == "no-store"
    # nothing is visible before the last byte
    assert listing(client, project, h) == []


def test_creation_with_upload(client: TestClient, people: dict[str, Person], project: str) -> None:
    h = people["member"].headers
    data = os.urandom(5000)
    response = client.post(
        uploads_url(project),
        content=data,
        headers={
            **h,
            **TUS,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata(filename="direct.bin", filetype="text/csv"),
            "Content-Type": OCTETS,
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    item = listing(client, project, h)[0]
    assert item["content_type"] == "text/csv"
    assert download(client, project, h, "direct.bin").content == data


def test_protocol_errors_are_clear(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    url = create(client, project, h, 10).headers["Location"]
    wrong_version = client.patch(
        url,
        content=b"x",
        headers={**h, "Tus-Resumable": "0.2.2", "Upload-Offset": "0", "Content-Type": OCTETS},
    )
    assert wrong_version.status_code == 412
    assert wrong_version.headers["Tus-Version"] == "1.0.0"
    wrong_type = client.patch(
        url,
        content=b"x",
        headers={**h, **TUS, "Upload-Offset": "0", "Content-Type": "text/plain"},
    )
    assert wrong_type.status_code == 415
    mismatch = patch(client, url, h, 3, b"abc")
    assert mismatch.status_code == 409
    assert mismatch.json()["error"]["code"] == "offset_mismatch"
    assert mismatch.headers["Upload-Offset"] == "0"
    bad_offset = patch(client, url, h, 0, b"x", **{"Upload-Offset": "-1"})
    assert bad_offset.status_code == 400
    too_much = patch(client, url, h, 0, b"y" * 11)
    assert too_much.status_code == 413
    assert too_much.json()["error"]["code"] == "beyond_upload_length"
    # the 10 bytes that fitted were stored; the upload is complete
    assert download(client, project, h, "data.bin").content == b"y" * 10
    missing_length = client.post(uploads_url(project), headers={**h, **TUS})
    assert missing_length.status_code == 400
    unknown = client.head(uploads_url(project) + "/" + "0" * 32, headers={**h, **TUS})
    assert unknown.status_code == 404


def test_file_names_are_validated(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    for bad in ("../escape", "a/../../b", "/abs", "a//b", "tab\there", "x" * 300, "a\\b", ""):
        response = create(client, project, h, 1, name=bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["error"]["code"] in {"invalid_path", "missing_filename"}
    nameless = client.post(uploads_url(project), headers={**h, **TUS, "Upload-Length": "1"})
    assert nameless.status_code == 422
    assert nameless.json()["error"]["code"] == "missing_filename"
    garbled = client.post(
        uploads_url(project),
        headers={**h, **TUS, "Upload-Length": "1", "Upload-Metadata": "filename !!!"},
    )
    assert garbled.status_code == 400
    # NFC: the decomposed spelling names the same file
    decomposed = "bla\u030aba\u0308r.txt"
    upload(client, project, h, b"1", name=decomposed)
    assert listing(client, project, h)[0]["path"] == "bl\u00e5b\u00e4r.txt"


def test_relative_path_keeps_folders(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    response = client.post(
        uploads_url(project),
        headers={
            **h,
            **TUS,
            "Upload-Length": "0",
            "Upload-Metadata": metadata(filename="c.txt", relativePath="a/b/c.txt"),
        },
    )
    assert response.status_code == 201
    assert listing(client, project, h)[0]["path"] == "a/b/c.txt"


def test_checksums(client: TestClient, people: dict[str, Person], project: str) -> None:
    h = people["member"].headers
    data = os.urandom(3 * MiB)
    url = create(client, project, h, len(data)).headers["Location"]
    first = data[: MiB + 3]
    good = "sha256 " + base64.b64encode(hashlib.sha256(first).digest()).decode()
    assert patch(client, url, h, 0, first, **{"Upload-Checksum": good}).status_code == 204
    rest = data[len(first) :]
    wrong = (
        "sha1 "
        + base64.b64encode(hashlib.sha1(b"something else", usedforsecurity=False).digest()).decode()
    )
    refused = patch(client, url, h, len(first), rest, **{"Upload-Checksum": wrong})
    assert refused.status_code == 460
    assert refused.json()["error"]["code"] == "checksum_mismatch"
    head = client.head(url, headers={**h, **TUS})
    assert head.headers["Upload-Offset"] == str(len(first))  # nothing of it was kept
    unknown = patch(client, url, h, len(first), rest, **{"Upload-Checksum": "crc32 AAAA"})
    assert unknown.status_code == 400
    md5 = "md5 " + base64.b64encode(hashlib.md5(rest).digest()).decode()  # noqa: S324
    assert patch(client, url, h, len(first), rest, **{"Upload-Checksum": md5}).status_code == 204
    assert download(client, project, h, "data.bin").content == data


def test_a_body_in_many_tiny_pieces_is_handed_on_in_bounded_lists(
    client: TestClient, people: dict[str, Person], project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces go to the encrypting thread as they came, at most FEED_PIECES at a time: a body
    trickled in bytes does not pile up one Python object per byte."""
    h = people["member"].headers
    pieces = [os.urandom(7) for _ in range(1000)] + [os.urandom(3 * MiB)]
    data = b"".join(pieces)
    handed: list[int] = []
    real_feed = uploads.PartWriter.feed

    def feed(self: uploads.PartWriter, chunks: list[bytes]) -> None:
        handed.append(len(chunks))
        real_feed(self, chunks)

    monkeypatch.setattr(uploads.PartWriter, "feed", feed)
    url = create(client, project, h, len(data)).headers["Location"]

    async def trickle() -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        # the in-process TestClient joins a streamed body; httpx's ASGI transport hands the
        # app each piece as its own http.request message, as a server does with TCP reads
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as ac:
            return await ac.patch(
                url,
                content=body(),
                headers={**h, **TUS, "Upload-Offset": "0", "Content-Type": OCTETS},
            )

    response = asyncio.run(trickle())
    assert response.status_code == 204, response.text
    assert max(handed) <= api.FEED_PIECES
    assert sum(handed) >= len(pieces)  # not joined on the way
    assert download(client, project, h, "data.bin").content == data


def test_termination(client: TestClient, people: dict[str, Person], project: str) -> None:
    h = people["member"].headers
    url = create(client, project, h, 10).headers["Location"]
    patch(client, url, h, 0, b"12345")
    assert client.delete(url, headers={**h, **TUS}).status_code == 204
    assert client.head(url, headers={**h, **TUS}).status_code == 404
    assert patch(client, url, h, 5, b"67890").status_code == 404


def test_expired_uploads_are_gone(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    url = create(client, project, h, 10).headers["Location"]
    with platform.db.write() as session:
        session.execute(update(Upload).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert client.head(url, headers={**h, **TUS}).status_code == 410
    assert patch(client, url, h, 0, b"1").status_code == 410


def test_uploads_are_private_to_who_started_them(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    url = create(client, project, people["member"].headers, 10).headers["Location"]
    other = people["owner"].headers
    assert client.head(url, headers={**other, **TUS}).status_code == 404
    assert patch(client, url, other, 0, b"x").status_code == 404


def test_a_second_writer_gets_423_while_a_lease_is_live(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    url = create(client, project, h, 10).headers["Location"]
    with platform.db.write() as session:
        session.execute(
            update(Upload).values(
                lease_owner="another-node/abc/def",
                lease_until=datetime.now(UTC) + timedelta(minutes=1),
            )
        )
    locked = patch(client, url, h, 0, b"x")
    assert locked.status_code == 423
    assert "Retry-After" in locked.headers
    # once the lease runs out, the next request takes the upload over
    with platform.db.write() as session:
        session.execute(update(Upload).values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert patch(client, url, h, 0, b"0123456789").status_code == 204


def test_concatenation(client: TestClient, people: dict[str, Person], project: str) -> None:
    h = people["member"].headers
    data = os.urandom(11 * MiB + 3)
    cuts = [0, 4 * MiB, 4 * MiB + 1, len(data)]
    partials = []
    for start, end in itertools.pairwise(cuts):
        made = client.post(
            uploads_url(project),
            headers={**h, **TUS, "Upload-Length": str(end - start), "Upload-Concat": "partial"},
        )
        assert made.status_code == 201, made.text
        assert patch(client, made.headers["Location"], h, 0, data[start:end]).status_code == 204
        partials.append(made.headers["Location"])
    assert listing(client, project, h) == []  # partials are not files
    head = client.head(partials[0], headers={**h, **TUS})
    assert head.headers["Upload-Concat"] == "partial"
    final = client.post(
        uploads_url(project),
        headers={
            **h,
            **TUS,
            "Upload-Concat": "final;" + " ".join(["http://x" + partials[0], *partials[1:]]),
            "Upload-Metadata": metadata(filename="joined.bin"),
        },
    )
    assert final.status_code == 201, final.text
    final_head = client.head(final.headers["Location"], headers={**h, **TUS})
    assert final_head.headers["Upload-Offset"] == str(len(data))
    assert final_head.headers["Upload-Concat"].startswith("final;")
    assert download(client, project, h, "joined.bin").content == data
    item = listing(client, project, h)[0]
    assert item["sha256"] == sha256(data)
    # a partial cannot be used twice, patched after the final, or be unfinished
    again = client.post(
        uploads_url(project),
        headers={
            **h,
            **TUS,
            "Upload-Concat": "final;" + partials[0],
            "Upload-Metadata": metadata(filename="again.bin"),
        },
    )
    assert again.status_code == 400
    assert patch(client, final.headers["Location"], h, 0, b"x").status_code == 403
    unfinished = client.post(
        uploads_url(project),
        headers={**h, **TUS, "Upload-Length": "5", "Upload-Concat": "partial"},
    ).headers["Location"]
    refused = client.post(
        uploads_url(project),
        headers={
            **h,
            **TUS,
            "Upload-Concat": "final;" + unfinished,
            "Upload-Metadata": metadata(filename="x.bin"),
        },
    )
    assert refused.status_code == 400
    assert "not finished" in refused.json()["error"]["message"]


def test_quota_and_maximum_size(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    owner, member = people["owner"].headers, people["member"].headers
    operator = people["operator"].headers
    set_quota = client.patch(
        f"/v1/projects/{project}/admin", json={"quota_bytes": 1000}, headers=operator
    )
    assert set_quota.status_code == 200, set_quota.text
    upload(client, project, member, b"a" * 600, name="first")
    over = create(client, project, owner, 401, name="second")
    assert over.status_code == 413
    assert over.json()["error"]["code"] == "quota_exceeded"
    # an unfinished upload reserves its length too
    assert create(client, project, owner, 400, name="second").status_code == 201
    assert create(client, project, owner, 1, name="third").status_code == 413
    huge = create(client, project, owner, 2**62, name="huge")
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "file_too_large"


def test_export_is_written_by_data_managers_only(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    assert create(client, project, people["member"].headers, 1, area="export").status_code == 403
    assert create(client, project, people["owner"].headers, 1, area="export").status_code == 403
    upload(client, project, people["data_manager"].headers, b"result", name="r.csv", area="export")
    got = download(client, project, people["member"].headers, "r.csv", area="export")
    assert got.content == b"result"


def test_replacing_a_file_keeps_the_old_one_in_the_trash(
    client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    upload(client, project, h, b"version 1", name="doc.txt")
    upload(client, project, h, b"version 2", name="doc.txt")
    assert download(client, project, h, "doc.txt").content == b"version 2"
    trash = client.get(f"/v1/projects/{project}/files/files/trash", headers=h).json()["items"]
    assert [t["sha256"] for t in trash] == [sha256(b"version 1")]
    assert "replaced" in trash[0]["deleted_by"]


@pytest.mark.parametrize("first_state", ["kept", "forgotten", "wrong"])
def test_concatenation_goes_on_from_the_first_partials_hash(
    client: TestClient,
    people: dict[str, Person],
    project: str,
    first_state: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first partial's running SHA-256 saves reading it back; a missing one (restart,
    another replica) or one that does not match the recorded digest is not used."""
    h = people["member"].headers
    data = os.urandom(5 * MiB + 7)
    cuts = [0, 2 * MiB + 1, len(data)]
    partials = []
    for start, end in itertools.pairwise(cuts):
        made = client.post(
            uploads_url(project),
            headers={**h, **TUS, "Upload-Length": str(end - start), "Upload-Concat": "partial"},
        )
        assert patch(client, made.headers["Location"], h, 0, data[start:end]).status_code == 204
        partials.append(made.headers["Location"])
    first_id = partials[0].rsplit("/", 1)[-1]
    kept = uploads._PARTIAL_HASHES
    if first_state == "forgotten":
        kept.take(first_id, None)
    elif first_state == "wrong":
        kept.keep(first_id, hashlib.sha256(b"something else"))
    else:  # the read-back must not touch the first partial: it starts after it
        real_hash = uploads.file_sha256

        def hash_after_first(reader: object, digest: object = None, start: int = 0) -> str:
            if start != cuts[1]:
                raise AssertionError("the first partial was read back")
            return real_hash(reader, digest, start)  # type: ignore[arg-type]

        monkeypatch.setattr(uploads, "file_sha256", hash_after_first)
    final = concatenate(client, uploads_url(project), h, partials, "joined.bin")
    assert final.status_code == 201, final.text
    assert listing(client, project, h)[0]["sha256"] == sha256(data)
    assert download(client, project, h, "joined.bin").content == data
    assert kept.take(first_id, None) is None  # used once, then gone


@pytest.mark.parametrize(
    ("places", "hashed"),
    [
        (("0", "1", "2"), [True, False, False]),
        (("1", "0", "2"), [False, True, False]),  # told wrongly: the final reads all back
        (("x", "+7", None), [True, True, True]),  # not a place we read: hashed as before
        (("00", "١", "3"), [True, True, False]),  # "١" is an Arabic-Indic digit one
    ],
)
def test_only_the_partial_said_to_be_first_is_hashed_as_it_arrives(
    client: TestClient,
    platform: Platform,
    people: dict[str, Person],
    project: str,
    places: tuple[str | None, ...],
    hashed: list[bool],
) -> None:
    """Our CLI tells each partial's place in ``Upload-Metadata`` (``partIndex``). Partials
    said to come later are not hashed as they arrive: the concatenation hashes them in order
    anyway. A wrong or odd place costs time, never the right SHA-256."""
    h = people["member"].headers
    data = os.urandom(7 * MiB + 5)
    cuts = [0, 3 * MiB + 1, 5 * MiB, len(data)]
    partials = []
    for (start, end), place in zip(itertools.pairwise(cuts), places, strict=True):
        told = {} if place is None else {"Upload-Metadata": metadata(partIndex=place)}
        made = client.post(
            uploads_url(project),
            headers={
                **h,
                **TUS,
                "Upload-Length": str(end - start),
                "Upload-Concat": "partial",
                **told,
            },
        )
        assert made.status_code == 201, made.text
        assert patch(client, made.headers["Location"], h, 0, data[start:end]).status_code == 204
        partials.append(made.headers["Location"])
    with platform.db.read() as session:
        recorded = [session.get(Upload, url.rsplit("/", 1)[-1]) for url in partials]
        digests = [u.sha256 if u is not None else "gone" for u in recorded]
    assert digests == [
        sha256(data[start:end]) if told else None
        for (start, end), told in zip(itertools.pairwise(cuts), hashed, strict=True)
    ]
    final = concatenate(client, uploads_url(project), h, partials, "joined.bin")
    assert final.status_code == 201, final.text
    assert listing(client, project, h)[0]["sha256"] == sha256(data)
    assert download(client, project, h, "joined.bin").content == data


def test_a_later_partial_resumed_after_a_restart_is_not_hashed_either(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    """After a restart the writer is rebuilt from the store without a running hash; a
    partial said to come later is then not read back to hash it at its end."""
    h = people["member"].headers
    data = os.urandom(5 * MiB + 3)
    cuts = [0, 2 * MiB, len(data)]
    partials = []
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        made = client.post(
            uploads_url(project),
            headers={
                **h,
                **TUS,
                "Upload-Length": str(end - start),
                "Upload-Concat": "partial",
                "Upload-Metadata": metadata(partIndex=str(index)),
            },
        )
        partials.append(made.headers["Location"])
    later = partials[1]
    half = 2 * MiB + 1
    assert patch(client, later, h, 0, data[cuts[1] : cuts[1] + half]).status_code == 204
    uploads._remember(later.rsplit("/", 1)[-1], None)  # what a restart forgets
    assert patch(client, later, h, half, data[cuts[1] + half :]).status_code == 204
    assert patch(client, partials[0], h, 0, data[: cuts[1]]).status_code == 204
    with platform.db.read() as session:
        recorded = session.get(Upload, later.rsplit("/", 1)[-1])
        assert recorded is not None
        assert (recorded.status, recorded.sha256) == ("completed", None)
    final = concatenate(client, uploads_url(project), h, partials, "joined.bin")
    assert final.status_code == 201, final.text
    assert listing(client, project, h)[0]["sha256"] == sha256(data)


def test_a_damaged_first_partial_fails_the_concatenation_even_with_its_hash_kept(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str
) -> None:
    """The first partial is not read back when its running hash is kept; its stored length
    is still authenticated, so a truncated blob fails instead of yielding a file."""
    h = people["member"].headers
    data = os.urandom(3 * MiB)
    partials = []
    for start, end in [(0, 2 * MiB), (2 * MiB, len(data))]:
        made = client.post(
            uploads_url(project),
            headers={**h, **TUS, "Upload-Length": str(end - start), "Upload-Concat": "partial"},
        )
        assert patch(client, made.headers["Location"], h, 0, data[start:end]).status_code == 204
        partials.append(made.headers["Location"])
    with platform.db.read() as session:
        first = session.get(Upload, partials[0].rsplit("/", 1)[-1])
        assert first is not None
        store, key = platform.store(first.store), first.storage_key
    damaged = store.read_bytes(key)[:-100]
    store.put_bytes(key, damaged)
    final_headers = {
        **h,
        **TUS,
        "Upload-Concat": "final;" + " ".join(partials),
        "Upload-Metadata": metadata(filename="joined.bin"),
    }
    with pytest.raises(IntegrityError, match="outside object"):
        client.post(uploads_url(project), headers=final_headers)
    assert listing(client, project, h) == []
