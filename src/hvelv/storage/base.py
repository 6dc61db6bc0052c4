"""The BlobStore port: what an upload server and a downloader need from object storage.

Objects are addressed by keys (``/``-separated, validated by :func:`validate_key`, the same
rules on every backend so objects can be moved between them). Stores never see plaintext:
callers hand them encrypted segment streams (:mod:`hvelv.crypto.segments`).

Resumable writes use a multipart API modelled on S3's, so S3 maps onto it one to one:

* :meth:`BlobStore.create_parts` starts an upload and returns an opaque ``upload_id``. The
  store keeps no process memory about it: the caller records the id (e.g. in the uploads
  table) and any process can continue, complete or abort the upload later.
  :meth:`BlobStore.list_uploads` finds uploads whose id was never recorded (crash cleanup).
* Parts are numbered from 1, written in order and once: ``write_part(n)`` needs exactly
  parts ``1..n-1`` present. A part is durable when ``write_part`` returns. After a failed
  or interrupted write, :meth:`BlobStore.list_parts` is the truth (the part may or may not
  have been stored; S3 part uploads and local parts are all-or-nothing), and the writer
  is rebuilt from the stored parts (``SegmentWriter.resume``). Parts are not rewritten
  because re-encryption never gives the same bytes and because SeaweedFS (4.48) keeps
  both versions of a re-uploaded part in its part list instead of replacing it.
  Callers serialise writes to one upload (e.g. with a row lock on the upload record).
* Every part but the last must hold at least :attr:`BlobStore.min_part_size` bytes (5 MiB
  on S3). Stores refuse a part that would break this as soon as they can see it (when
  the next part is written) and at :meth:`BlobStore.complete`.

Choice for encrypted uploads: one encrypted segment per part, with a segment size of at
least ``min_part_size`` (see :func:`plan_segment_size`). The stores stay stateless and
need no buffering or server-side re-assembly, a part is durable exactly when a segment is,
and on S3 a part is never copied again. The writer's partial last segment is kept by the
caller as a checkpoint blob (``SegmentWriter.checkpoint``) in an ordinary object. The price
is S3's limit of 10,000 parts: :func:`plan_segment_size` grows the segment size for large
declared lengths.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_KEY_BYTES",
    "BlobStore",
    "BytesLike",
    "InvalidKeyError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "PartInfo",
    "PartOrderError",
    "PartTooSmallError",
    "PendingUpload",
    "StorageError",
    "UploadNotFoundError",
    "check_part_numbers",
    "plan_segment_size",
    "validate_key",
]

MAX_KEY_BYTES: Final = 1024
MAX_COMPONENT_BYTES: Final = 255
DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
RESERVED_PREFIX: Final = ".hvelv-"
MiB: Final = 1024 * 1024

#: what stores accept as data (the segment writer returns bytearrays)
BytesLike = bytes | bytearray | memoryview


class StorageError(Exception):
    """Base class of storage errors."""


class InvalidKeyError(StorageError, ValueError):
    """A key that could escape the store or is not portable between backends."""


class ObjectNotFoundError(StorageError):
    """No object under this key."""


class UploadNotFoundError(StorageError):
    """No multipart upload with this id for this key (completed, aborted or never made)."""


class PartOrderError(StorageError, ValueError):
    """Parts must be written 1, 2, 3, ..., each once."""


class PartTooSmallError(StorageError, ValueError):
    """A part other than the last is smaller than the store's ``min_part_size``."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class PartInfo:
    number: int
    size: int


@dataclass(frozen=True, slots=True)
class PendingUpload:
    key: str
    upload_id: str
    started: datetime | None = None


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe, portable object key, else raise InvalidKeyError.

    Rejected: empty keys, absolute paths, ``.`` and ``..`` components, empty components
    (``a//b``, trailing ``/``), backslashes, NUL and other control characters, components
    starting with ``.hvelv-`` (reserved for temporary files), components longer than 255
    bytes and keys longer than 1024 bytes in UTF-8.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("key must be a non-empty string")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise InvalidKeyError("key contains a control character")
    if "\\" in key:
        raise InvalidKeyError("key contains a backslash")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKeyError("key is not valid Unicode") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKeyError("key must be relative")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKeyError("key has an empty, '.' or '..' component")
        if part.startswith(RESERVED_PREFIX):
            raise InvalidKeyError(f"key components starting with {RESERVED_PREFIX!r} are reserved")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise InvalidKeyError(f"key component longer than {MAX_COMPONENT_BYTES} bytes")
    return key


def check_part_numbers(part_numbers: Sequence[int]) -> int:
    """Parts to complete must be exactly 1..N; return N."""
    count = len(part_numbers)
    if count == 0 or list(part_numbers) != list(range(1, count + 1)):
        raise PartOrderError("parts to complete must be numbered 1..N without gaps")
    return count


def check_range(start: int, end: int | None, size: int) -> int:
    """Validate ``[start, end)`` against an object of ``size`` bytes; return ``end``."""
    if end is None:
        end = size
    if not 0 <= start <= end <= size:
        raise ValueError(f"range [{start}, {end}) outside object of {size} bytes")
    return end


def plan_segment_size(
    store: BlobStore,
    expected_length: int | None = None,
    *,
    preferred: int = 4 * MiB,
    overhead_parts: int = 100,
) -> int:
    """Segment size for an upload of ``expected_length`` plaintext bytes into ``store``.

    At least ``preferred`` and at least the store's ``min_part_size`` (so that one
    encrypted segment per part is a valid part), rounded up to whole MiB, and large enough
    that the object fits in ``store.max_parts - overhead_parts`` parts.
    """
    size = max(preferred, store.min_part_size)
    if expected_length is not None and store.max_parts:
        usable = max(1, store.max_parts - overhead_parts)
        size = max(size, -(-expected_length // usable))
    return -(-size // MiB) * MiB


class BlobStore(abc.ABC):
    """An object store for encrypted blobs. Implementations must be process-stateless."""

    #: every part but the last must be at least this large
    min_part_size: int = 1
    #: highest allowed part number (0: unlimited)
    max_parts: int = 0

    # -- whole objects ---------------------------------------------------------------------

    @abc.abstractmethod
    def put(self, key: str, chunks: Iterable[BytesLike]) -> ObjectInfo:
        """Store an object from a stream of chunks, atomically and durably.

        Readers see the old object or the new one, never a mix; on error nothing changes.
        """

    def put_bytes(self, key: str, data: BytesLike) -> ObjectInfo:
        return self.put(key, [data])

    @abc.abstractmethod
    def open_range(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        cache: bool = True,
    ) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` (``end=None``: to the end) in chunks.

        The object is opened before this returns, so a missing key or a bad range raises
        here (ObjectNotFoundError, ValueError), not in the middle of the iteration.
        ``cache=False``: a store that keeps a cache (the local page cache) lets what was
        read go from it (one long read does not push everything else out).
        """

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of an object (for bounded ranges such as one segment)."""
        return b"".join(self.open_range(key, start, end))

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.open_range(key))

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time; raises ObjectNotFoundError."""

    def size(self, key: str) -> int:
        return self.stat(key).size

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; deleting a missing object is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (a plain string prefix).

        The order is not specified: S3 promises key order, but S3-compatible servers such as
        SeaweedFS list directory by directory. Sort if order matters.
        """

    @abc.abstractmethod
    def copy(self, src: str, dst: str) -> ObjectInfo:
        """Copy an object (replacing ``dst``); raises ObjectNotFoundError."""

    def rename(self, src: str, dst: str) -> ObjectInfo:
        """Move an object (replacing ``dst``). Not atomic on every backend."""
        info = self.copy(src, dst)
        self.delete(src)
        return info

    # -- resumable multipart writes -----------------------------------------------------------

    @abc.abstractmethod
    def create_parts(self, key: str) -> str:
        """Start a multipart upload to ``key``; return its opaque upload id."""

    @abc.abstractmethod
    def write_part(
        self, key: str, upload_id: str, part_number: int, data: BytesLike, *, cache: bool = True
    ) -> PartInfo:
        """Store part ``part_number`` (>= 1) durably before returning.

        ``cache=False`` tells a store that keeps a cache (the local page cache) that the
        part will not be read back soon, so it need not stay there.

        Raises PartOrderError unless exactly parts ``1..part_number-1`` exist (so also
        when this part is already stored), PartTooSmallError if the previous part is
        smaller than ``min_part_size``, UploadNotFoundError for an unknown or finished
        upload.
        """

    @abc.abstractmethod
    def list_parts(self, key: str, upload_id: str) -> builtins.list[PartInfo]:
        """The parts stored so far, by number."""

    @abc.abstractmethod
    def complete(self, key: str, upload_id: str, part_numbers: Sequence[int]) -> ObjectInfo:
        """Assemble parts ``1..N`` (exactly ``part_numbers``) into the object ``key``.

        Parts above N are discarded. The upload id is invalid afterwards; if the caller
        crashed after completing, :meth:`exists` tells whether the object was made.
        """

    @abc.abstractmethod
    def abort(self, key: str, upload_id: str) -> None:
        """Discard an upload and its parts; aborting a finished upload is not an error."""

    @abc.abstractmethod
    def list_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        """Unfinished uploads to keys starting with ``prefix`` (for expiry and cleanup)."""
