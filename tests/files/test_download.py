"""Downloads: ranges, conditional requests and integrity (RFC 9110)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hvelv.crypto.segments import IntegrityError
from hvelv.files import api
from hvelv.files.ahead import stream_ahead
from hvelv.files.blobs import blobs_of
from hvelv.files.models import StoredFile
from hvelv.platform import Platform
from tests.files.support import download, sha256, upload
from tests.support.people import Person

MiB = 1024 * 1024
SIZE = 9 * MiB + 321


@pytest.fixture
def stored(client: TestClient, people: dict[str, Person], project: str) -> bytes:
    data = os.urandom(SIZE)
    upload(client, project, people["member"].headers, data, name="big.bin")
    return data


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(0, SIZE - 1), st.integers(1, SIZE))
def test_random_ranges_equal_the_slice(
    client: TestClient, people: dict[str, Person], project: str, stored: bytes, start: int, n: int
) -> None:
    end = min(SIZE - 1, start + n - 1)
    response = download(
        client, project, people["member"].headers, "big.bin", Range=f"bytes={start}-{end}"
    )
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.content == stored[start : end + 1]


def test_range_forms(
    client: TestClient, people: dict[str, Person], project: str, stored: bytes
) -> None:
    h = people["member"].headers
    suffix = download(client, project, h, "big.bin", Range="bytes=-100")
    assert suffix.status_code == 206
    assert suffix.content == stored[-100:]
    open_end = download(client, project, h, "big.bin", Range=f"bytes={SIZE - 5}-")
    assert open_end.content == stored[-5:]
    clipped = download(client, project, h, "big.bin", Range=f"bytes=10-{SIZE * 2}")
    assert clipped.status_code == 206
    assert clipped.content == stored[10:]
    several = download(client, project, h, "big.bin", Range="bytes=0-1,5-6")
    assert several.status_code == 200
    assert len(several.content) == SIZE
    outside = download(client, project, h, "big.bin", Range=f"bytes={SIZE}-")
    assert outside.status_code == 416
    assert outside.headers["Content-Range"] == f"bytes */{SIZE}"


def test_conditional_requests(
    client: TestClient, people: dict[str, Person], project: str, stored: bytes
) -> None:
    h = people["member"].headers
    full = download(client, project, h, "big.bin")
    tag = full.headers["ETag"]
    assert tag == f'"{sha256(stored)}"'
    assert full.headers["Accept-Ranges"] == "bytes"
    assert download(client, project, h, "big.bin", **{"If-None-Match": tag}).status_code == 304
    fresh = download(client, project, h, "big.bin", Range="bytes=0-9", **{"If-Range": tag})
    assert fresh.status_code == 206
    stale = download(client, project, h, "big.bin", Range="bytes=0-9", **{"If-Range": '"old"'})
    assert stale.status_code == 200
    assert len(stale.content) == SIZE
    dated = download(
        client,
        project,
        h,
        "big.bin",
        Range="bytes=0-9",
        **{"If-Range": full.headers["Last-Modified"]},
    )
    assert dated.status_code == 206
    head = client.head(f"/v1/projects/{project}/files/files/content/big.bin", headers=h)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(SIZE)
    assert head.content == b""


def _flip(platform: Platform, path: str, offset_in_blob: int) -> None:
    with platform.db.read() as session:
        row = session.scalars(select(StoredFile).where(StoredFile.path == path)).one()
        blob = blobs_of(row.blobs)[0]
    object_path = platform.settings.home / "blobs" / "objects" / blob.key
    raw = bytearray(object_path.read_bytes())
    raw[offset_in_blob] ^= 0x01
    object_path.write_bytes(bytes(raw))


def test_a_flipped_byte_in_the_first_segment_is_a_clean_error(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str, stored: bytes
) -> None:
    _flip(platform, "big.bin", 100)
    response = download(client, project, people["member"].headers, "big.bin")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "integrity_error"


def test_a_flipped_byte_later_never_yields_wrong_bytes(
    client: TestClient, platform: Platform, people: dict[str, Person], project: str, stored: bytes
) -> None:
    _flip(platform, "big.bin", 6 * MiB)
    h = people["member"].headers
    with pytest.raises(IntegrityError, match=r"segment 1"):
        download(client, project, h, "big.bin")  # the stream breaks; no wrong bytes
    # a range that avoids the damaged segment still works
    ok = download(client, project, h, "big.bin", Range="bytes=0-99")
    assert ok.content == stored[:100]


def test_a_download_cancelled_while_it_waits_to_send_stops_reading_ahead() -> None:
    """A response cancelled while the client reads nothing (a server shutting down): the
    body is closed at once, so the read-ahead thread closes the stored file."""
    closed = threading.Event()

    def chunks() -> Iterator[bytes]:
        try:
            for _ in range(100):
                yield bytes(1024)
        finally:
            closed.set()

    async def run() -> bool:
        sending = asyncio.Event()

        async def send(message: Any) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                sending.set()
                await asyncio.Event().wait()  # a client that never reads

        response = api._Download(api._guarded(b"", stream_ahead(chunks(), 1), "x.bin"))
        task = asyncio.ensure_future(response.stream_response(send))
        await sending.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # the response (and its body) is still referenced: only the close can have done it
        return await asyncio.to_thread(closed.wait, 10)

    assert asyncio.run(run())
