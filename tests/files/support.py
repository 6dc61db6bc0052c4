"""Helpers for file tests: raw tus requests through the in-process client."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def metadata(**items: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in items.items())


def uploads_url(pid: str, area: str = "files") -> str:
    return f"/v1/projects/{pid}/files/{area}/uploads"


def create(
    client: Any,
    pid: str,
    headers: dict[str, str],
    length: int,
    name: str = "data.bin",
    area: str = "files",
    extra: dict[str, str] | None = None,
) -> Any:
    return client.post(
        uploads_url(pid, area),
        headers={
            **headers,
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": metadata(filename=name),
            **(extra or {}),
        },
    )


def concatenate(
    client: Any, url: str, headers: dict[str, str], partials: list[str], name: str
) -> Any:
    """POST the final upload of a tus concatenation of ``partials`` (their URLs) to ``url``."""
    return client.post(
        url,
        headers={
            **headers,
            **TUS,
            "Upload-Concat": "final;" + " ".join(partials),
            "Upload-Metadata": metadata(filename=name),
        },
    )


def patch(
    client: Any, url: str, headers: dict[str, str], offset: int, data: bytes, **extra: str
) -> Any:
    return client.patch(
        url,
        content=data,
        headers={
            **headers,
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": OCTETS,
            **extra,
        },
    )


def upload(
    client: Any,
    pid: str,
    headers: dict[str, str],
    data: bytes,
    name: str = "data.bin",
    area: str = "files",
    chunk: int | None = None,
) -> str:
    """Upload ``data`` in chunks; return the upload URL."""
    created = create(client, pid, headers, len(data), name, area)
    assert created.status_code == 201, created.text
    url: str = created.headers["Location"]
    offset = 0
    step = chunk or max(1, len(data))
    while offset < len(data):
        response = patch(client, url, headers, offset, data[offset : offset + step])
        assert response.status_code == 204, response.text
        offset = int(response.headers["Upload-Offset"])
    return url


def download(
    client: Any, pid: str, headers: dict[str, str], path: str, area: str = "files", **extra: str
) -> Any:
    return client.get(
        f"/v1/projects/{pid}/files/{area}/content/{path}", headers={**headers, **extra}
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
