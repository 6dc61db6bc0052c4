"""HTTP conditional and range requests for downloads (RFC 9110 §13, §14).

One range per request (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``); a multi-range request
is answered with the whole file (RFC 9110 allows ignoring Range). ETags are strong: the
quoted SHA-256 of the plaintext.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Unsatisfiable(ValueError):
    """The range lies outside the file (416)."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def etag(sha256: str) -> str:
    return f'"{sha256}"'


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The requested range, None for the whole file, or :class:`Unsatisfiable`."""
    if header is None:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None  # malformed or several ranges: ignore, send everything
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise Unsatisfiable(header)
        return ByteRange(max(0, size - length), size)
    start = int(first)
    if start >= size:
        raise Unsatisfiable(header)
    end = size if not last else min(int(last) + 1, size)
    if end <= start:
        return None  # last < first: syntactically invalid, ignore
    return ByteRange(start, end)


def _etags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def none_match(header: str | None, tag: str) -> bool:
    """True when If-None-Match says the client already has this representation (304)."""
    if header is None:
        return False
    tags = _etags(header)
    return "*" in tags or tag in tags or f"W/{tag}" in tags


def range_applies(if_range: str | None, tag: str, modified: datetime) -> bool:
    """If-Range: serve the range only if the validator still matches (else the whole file)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"'):
        return value == tag  # strong comparison
    if value.startswith("W/"):
        return False  # weak validators never match for If-Range
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return int(modified.timestamp()) <= int(when.timestamp())
