"""The tus 1.0.0 resumable upload protocol: headers in and out, nothing stateful.

https://tus.io/protocols/resumable-upload — core protocol plus the extensions
``creation``, ``creation-with-upload``, ``creation-defer-length``, ``termination``,
``checksum``, ``expiration`` and ``concatenation``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any, Final
from urllib.parse import urlsplit

from hvelv.errors import HvelvError, InvalidInput

VERSION: Final = "1.0.0"
EXTENSIONS: Final = (
    "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,"
    "concatenation"
)
CHECKSUM_ALGORITHMS: Final = ("sha1", "sha256", "md5")
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
MAX_METADATA: Final = 4096
TUS_RESPONSE_HEADERS: Final = (
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Upload-Concat",
)


class TusError(HvelvError):
    """A protocol error; keeps the one JSON error shape and adds Tus-Resumable."""

    def __init__(self, status: int, code: str, message: str, **kw: Any) -> None:
        headers = {"Tus-Resumable": VERSION, **kw.pop("headers", {})}
        super().__init__(message, code=code, status=status, headers=headers, **kw)


def check_version(value: str | None) -> None:
    """Every request but OPTIONS must name the protocol version we speak (412 otherwise)."""
    if value != VERSION:
        raise TusError(
            412,
            "tus_version",
            f"Tus-Resumable must be {VERSION}",
            headers={"Tus-Version": VERSION},
        )


def parse_int(value: str | None, name: str) -> int:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 19:
        raise TusError(400, "invalid_header", f"{name} must be a non-negative integer")
    return int(value)


def parse_defer_length(value: str | None) -> bool:
    """``Upload-Defer-Length``: absent, or exactly ``1`` (the length comes on a PATCH)."""
    if value is None:
        return False
    if value.strip() != "1":
        raise TusError(400, "invalid_header", "Upload-Defer-Length must be 1")
    return True


def parse_metadata(value: str | None) -> dict[str, str | None]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (value optional)."""
    if not value:
        return {}
    if len(value) > MAX_METADATA:
        raise TusError(400, "invalid_metadata", f"Upload-Metadata is longer than {MAX_METADATA}")
    result: dict[str, str | None] = {}
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if not key or len(parts) > 2 or key in result or not key.isascii():
            raise TusError(400, "invalid_metadata", "Upload-Metadata is malformed")
        if len(parts) == 1:
            result[key] = None
            continue
        try:
            result[key] = base64.b64decode(parts[1], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise TusError(
                400, "invalid_metadata", f"Upload-Metadata value of {key!r} is not base64 UTF-8"
            ) from None
    return result


def encode_metadata(items: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in items.items())


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return hashlib.new(self.algorithm)


def parse_checksum(value: str | None) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``; unsupported algorithms are a 400."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise TusError(
            400,
            "checksum_algorithm",
            f"unsupported checksum algorithm; use one of {', '.join(CHECKSUM_ALGORITHMS)}",
        )
    try:
        digest = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise TusError(400, "invalid_header", "Upload-Checksum digest is not base64") from None
    if len(digest) != hashlib.new(algorithm).digest_size:
        raise TusError(400, "invalid_header", f"Upload-Checksum is not a {algorithm} digest")
    return Checksum(algorithm, digest)


@dataclass(frozen=True)
class Concat:
    kind: str  # "partial" | "final"
    partial_ids: tuple[str, ...] = ()


def parse_concat(value: str | None) -> Concat | None:
    """``Upload-Concat: partial`` or ``final;<url> <url> ...`` (URLs or paths of partials)."""
    if value is None:
        return None
    value = value.strip()
    if value == "partial":
        return Concat("partial")
    if value.startswith("final;"):
        urls = value[len("final;") :].split()
        if not urls:
            raise TusError(400, "invalid_concat", "Upload-Concat: final names no uploads")
        ids = tuple(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] for url in urls)
        return Concat("final", ids)
    raise TusError(400, "invalid_concat", "Upload-Concat must be 'partial' or 'final;<urls>'")


def http_date(value: datetime) -> str:
    return format_datetime(value, usegmt=True)


def bad_content_type(value: str | None) -> InvalidInput | None:
    if (value or "").split(";")[0].strip().lower() != OFFSET_CONTENT_TYPE:
        return InvalidInput(
            f"Content-Type must be {OFFSET_CONTENT_TYPE}", code="content_type", status=415
        )
    return None
