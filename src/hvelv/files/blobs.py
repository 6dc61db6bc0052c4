"""Encrypted blobs behind a file, and reading a file's plaintext back from them.

A file is one blob, or several for a concatenated upload (each part keeps the blob it
was uploaded into; nothing is copied or re-encrypted). Every blob is an AES-256-GCM
segment stream (:mod:`hvelv.crypto.segments`) under its own data key, bound to its own
object id, in one of the platform's blob stores.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from hvelv.crypto.segments import SegmentReader, encrypted_size
from hvelv.platform import Platform
from hvelv.projects import keys

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Blob:
    store: str  # name of the blob store (see Platform.store)
    key: str  # object key in that store
    oid: str  # object id (hex), bound into every segment's associated data
    key_id: int  # the project's data key that encrypts it
    segment_size: int
    size: int  # plaintext bytes

    @property
    def object_id(self) -> bytes:
        return bytes.fromhex(self.oid)

    @property
    def stored_size(self) -> int:
        return encrypted_size(self.size, self.segment_size)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Blob:
        return cls(**data)


def new_blob_name(pid: str) -> tuple[str, str]:
    """(object key, object id hex) for a new blob of project ``pid``."""
    oid = uuid.uuid4().hex
    return f"{pid}/blobs/{oid}", oid


def blobs_of(data: Sequence[dict[str, Any]]) -> list[Blob]:
    return [Blob.from_json(item) for item in data]


class FileReader:
    """Plaintext of a file (one or more blobs), decrypting only the segments needed."""

    def __init__(self, platform: Platform, session: Session, pid: str, blobs: list[Blob]) -> None:
        self._platform = platform
        self._readers: list[tuple[int, SegmentReader]] = []
        start = 0
        data_keys: dict[int, bytes] = {}
        for blob in blobs:
            if blob.key_id not in data_keys:
                data_keys[blob.key_id] = keys.data_key(session, platform.keyring, pid, blob.key_id)
            store = platform.store(blob.store)
            self._readers.append(
                (
                    start,
                    SegmentReader(
                        data_keys[blob.key_id],
                        blob.object_id,
                        partial(store.read_range, blob.key),
                        blob.stored_size,
                        segment_size=blob.segment_size,
                        open_range=partial(store.open_range, blob.key),
                    ),
                )
            )
            start += blob.size
        self.size = start

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Plaintext ``[start, end)``; every blob it touches is length-checked first."""
        end = self.size if end is None else end
        for offset, reader in self._readers:
            lo = max(start, offset)
            hi = min(end, offset + reader.plaintext_size)
            if lo < hi:
                yield from reader.iter_range(lo - offset, hi - offset)

    def first_chunk(self, start: int, end: int) -> tuple[bytes, Iterator[bytes]]:
        """Decrypt the first piece before any response header is sent, so a damaged file
        is a clean error response rather than a broken stream; return it and the rest."""
        it = self.iter_range(start, end)
        first = next(it, b"")
        return first, it


def file_sha256(reader: FileReader) -> str:
    digest = hashlib.sha256()
    for chunk in reader.iter_range():
        digest.update(chunk)
    return digest.hexdigest()
