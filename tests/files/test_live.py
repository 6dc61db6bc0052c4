"""A stock tus client (tuspy) against a live server: round trips, a client killed mid-way,
and a server killed with SIGKILL mid-upload that restarts and completes the upload."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tusclient import client as tus_client

from hvelv.config import Settings
from tests.files.support import OCTETS, TUS, metadata, sha256
from tests.support.people import Person
from tests.support.server import free_port, server_process

MiB = 1024 * 1024
SMALL_PARTS = {"HVELV_SEGMENT_SIZE": str(256 * 1024), "HVELV_UPLOAD_PART_BYTES": str(512 * 1024)}


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "HVELV_HOME": str(settings.home),
        "HVELV_DATABASE_URL": settings.resolved_database_url,
        **extra,
    }


def tuspy_upload(url: str, headers: dict[str, str], path: Path, name: str, **kw: Any) -> str:
    client = tus_client.TusClient(url, headers=headers)
    with path.open("rb") as stream:  # tuspy leaves files it opened itself unclosed
        uploader = client.uploader(
            file_stream=stream, chunk_size=2 * MiB, metadata={"filename": name}, **kw
        )
        uploader.upload()
    return str(uploader.url)


def remote_listing(url: str, pid: str, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    items = httpx.get(f"{url}/v1/projects/{pid}/files/files", headers=headers).json()["items"]
    return {item["path"]: item for item in items}


def fetch(url: str, pid: str, headers: dict[str, str], path: str) -> bytes:
    response = httpx.get(f"{url}/v1/projects/{pid}/files/files/content/{path}", headers=headers)
    assert response.status_code == 200, response.text
    return response.content


def test_tuspy_round_trips(
    tmp_path: Path, settings: Settings, client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    files = {"zero": b"", "one": b"\x01", "multi": os.urandom(5 * MiB + 77)}
    with server_process(server_env(settings, **SMALL_PARTS), tmp_path / "server.log") as (url, _):
        endpoint = f"{url}/v1/projects/{project}/files/files/uploads"
        for name, data in files.items():
            path = tmp_path / name
            path.write_bytes(data)
            tuspy_upload(endpoint, h, path, name, upload_checksum=(name == "multi"))
        listed = remote_listing(url, project, h)
        for name, data in files.items():
            assert listed[name]["sha256"] == sha256(data)
            assert fetch(url, project, h, name) == data


def slow_body(data: bytes, block: int, pause: float, stop: threading.Event) -> Iterator[bytes]:
    for start in range(0, len(data), block):
        if stop.is_set():
            return
        yield data[start : start + block]
        time.sleep(pause)


def start_slow_patch(
    upload_url: str, headers: dict[str, str], data: bytes, stop: threading.Event
) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the connection is cut on purpose
            httpx.patch(
                upload_url,
                content=slow_body(data, 64 * 1024, 0.005, stop),
                headers={**headers, **TUS, "Upload-Offset": "0", "Content-Type": OCTETS},
                timeout=60,
            )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_for_offset(upload_url: str, headers: dict[str, str], at_least: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        head = httpx.head(upload_url, headers={**headers, **TUS})
        offset = int(head.headers.get("Upload-Offset", "0"))
        if offset >= at_least:
            return offset
        time.sleep(0.05)
    raise AssertionError("the upload made no durable progress")


def create_upload(url: str, pid: str, headers: dict[str, str], length: int, name: str) -> str:
    created = httpx.post(
        f"{url}/v1/projects/{pid}/files/files/uploads",
        headers={
            **headers,
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": metadata(filename=name),
        },
    )
    assert created.status_code == 201, created.text
    return f"{url}{created.headers['Location']}"


def test_a_client_cut_off_mid_way_resumes_from_head(
    tmp_path: Path, settings: Settings, client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    data = os.urandom(6 * MiB + 5)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    with server_process(server_env(settings, **SMALL_PARTS), tmp_path / "server.log") as (url, _):
        upload_url = create_upload(url, project, h, len(data), "resumed.bin")
        stop = threading.Event()
        thread = start_slow_patch(upload_url, h, data, stop)
        offset = wait_for_offset(upload_url, h, MiB)
        stop.set()  # the client goes away mid-request
        thread.join(timeout=30)
        time.sleep(0.3)
        head = httpx.head(upload_url, headers={**h, **TUS})
        resumed_at = int(head.headers["Upload-Offset"])
        assert offset <= resumed_at < len(data)
        # a stock client continues from HEAD's offset
        with source.open("rb") as stream:
            uploader = tus_client.TusClient(url, headers=h).uploader(
                file_stream=stream, url=upload_url, chunk_size=2 * MiB
            )
            assert uploader.offset == resumed_at
            uploader.upload()
        assert remote_listing(url, project, h)["resumed.bin"]["sha256"] == sha256(data)
        assert fetch(url, project, h, "resumed.bin") == data


def socket_buffers_max() -> int:
    """The most a TCP connection here can hold in its send and receive buffers."""
    ipv4 = Path("/proc/sys/net/ipv4")
    return sum(int((ipv4 / name).read_text().split()[2]) for name in ("tcp_rmem", "tcp_wmem"))


def open_blobs(pid: int, home: Path) -> dict[str, int]:
    """Files under the blob store that process ``pid`` holds open, and the file position."""
    objects = str(home / "blobs" / "objects")
    held = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            target = os.readlink(fd)
            if target.startswith(objects):
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                held[target] = int(info.split("pos:", 1)[1].split()[0])
    return held


def wait_until_stalled(pid: int, home: Path) -> dict[str, int]:
    """The server's reads of the blob store once they stopped moving (its sends are
    blocked by a client that reads no more)."""
    deadline = time.monotonic() + 30
    last = open_blobs(pid, home)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = open_blobs(pid, home)
        if now == last:
            return now
        last = now
    raise AssertionError("the server never stopped reading ahead")


def test_a_client_gone_mid_download_releases_the_stored_file(
    tmp_path: Path, settings: Settings, client: TestClient, people: dict[str, Person], project: str
) -> None:
    """The server stops reading (and decrypting) ahead for a client that went away."""
    h = people["member"].headers
    data = os.urandom(max(96 * MiB, 2 * socket_buffers_max()))
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    with server_process(server_env(settings, **SMALL_PARTS), tmp_path / "server.log") as (
        url,
        process,
    ):
        tuspy_upload(f"{url}/v1/projects/{project}/files/files/uploads", h, source, "big.bin")
        content = f"{url}/v1/projects/{project}/files/files/content/big.bin"
        with httpx.stream("GET", content, headers=h) as response:
            assert response.status_code == 200
            chunks = response.iter_raw(64 * 1024)  # kept: dropping it closes the connection
            first = next(chunks)
            assert data.startswith(first)
            # far more than the socket buffers hold: the server waits to send more, having
            # read only a bounded way ahead
            stalled = wait_until_stalled(process.pid, settings.home)
            assert stalled
            assert all(position < len(data) * 3 // 4 for position in stalled.values())
        deadline = time.monotonic() + 30
        while open_blobs(process.pid, settings.home) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_blobs(process.pid, settings.home) == {}
        assert fetch(url, project, h, "big.bin") == data  # and the next download is whole


@pytest.mark.slow
def test_the_server_killed_mid_upload_restarts_and_completes_it(
    tmp_path: Path, settings: Settings, client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    data = os.urandom(8 * MiB + 3)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    env = server_env(settings, **SMALL_PARTS)
    port = free_port()
    with server_process(env, tmp_path / "server.log", port) as (url, process):
        upload_url = create_upload(url, project, h, len(data), "survivor.bin")
        stop = threading.Event()
        thread = start_slow_patch(upload_url, h, data, stop)
        durable = wait_for_offset(upload_url, h, 2 * MiB)
        process.kill()  # SIGKILL: no clean-up, the lease stays behind
        process.wait()
        stop.set()
        thread.join(timeout=30)
    with server_process(env, tmp_path / "server.log", port) as (url, _):
        head = httpx.head(upload_url, headers={**h, **TUS})
        assert head.status_code == 200
        offset = int(head.headers["Upload-Offset"])
        assert durable <= offset < len(data)
        with source.open("rb") as stream:
            tus_client.TusClient(url, headers=h).uploader(
                file_stream=stream, url=upload_url, chunk_size=3 * MiB
            ).upload()
        listed = remote_listing(url, project, h)
        assert listed["survivor.bin"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert fetch(url, project, h, "survivor.bin") == data


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_server_memory_stays_bounded_for_a_4_gib_file(
    tmp_path: Path, settings: Settings, client: TestClient, people: dict[str, Person], project: str
) -> None:
    h = people["member"].headers
    size = 4 * 1024 * MiB
    block = os.urandom(4 * MiB)
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)

    def body() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    with server_process(server_env(settings), tmp_path / "server.log") as (url, process):
        upload_url = create_upload(url, project, h, size, "huge.bin")
        response = httpx.patch(
            upload_url,
            content=body(),
            headers={**h, **TUS, "Upload-Offset": "0", "Content-Type": OCTETS},
            timeout=600,
        )
        assert response.status_code == 204, response.text
        got = hashlib.sha256()
        with httpx.stream(
            "GET",
            f"{url}/v1/projects/{project}/files/files/content/huge.bin",
            headers=h,
            timeout=600,
        ) as download:
            assert download.status_code == 200
            for chunk in download.iter_bytes(4 * MiB):
                got.update(chunk)
        assert got.hexdigest() == expected.hexdigest()
        assert remote_listing(url, project, h)["huge.bin"]["sha256"] == expected.hexdigest()
        assert peak_rss_mb(process.pid) < 250
