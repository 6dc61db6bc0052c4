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
from hvelv.files.ahead import read_ahead
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
    """Plaintext of a file (one or more blobs), decrypting only the segments needed.

    ``cache=False`` for a read that goes through the whole file once (hashing it after a
    concatenation or a migration): the store lets the pages it read go, so such a read
    does not push the rest of the page cache out.
    """

    def __init__(
        self,
        platform: Platform,
        session: Session,
        pid: str,
        blobs: list[Blob],
        *,
        cache: bool = True,
    ) -> None:
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
                        open_range=partial(store.open_range, blob.key, cache=cache),
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

    def verify_length(self, blob: int) -> None:
        """Authenticate blob ``blob``'s final segment (its length), without reading the rest."""
        self._readers[blob][1].verify_length()

    def first_chunk(self, start: int, end: int) -> tuple[bytes, Iterator[bytes]]:
        """Decrypt the first piece before any response header is sent, so a damaged file
        is a clean error response rather than a broken stream; return it and the rest."""
        it = self.iter_range(start, end)
        first = next(it, b"")
        return first, it


def file_sha256(reader: FileReader, digest: Any = None, start: int = 0) -> str:
    """SHA-256 of the file's plaintext; with ``digest`` (a running ``hashlib`` hash of the
    bytes before ``start``), that hash continued over the rest. Reading and decrypting the
    next segments happens in a thread of its own while this one hashes (SHA-256 is the
    slower of the two), so the whole takes about as long as the hashing alone."""
    digest = hashlib.sha256() if digest is None else digest
    for chunk in read_ahead(reader.iter_range(start), depth=2):
        digest.update(chunk)
    return str(digest.hexdigest())
