"""A dataset version from a streamed request body (``POST .../datasets/{name}/upload``).

The body is never held whole in memory and no plaintext reaches the disk: it is encrypted as
it arrives (:class:`~hvelv.crypto.segments.SegmentWriter`, one segment in memory) into a
temporary object in the project's blob store, one sealed segment per part of a multipart
upload — the layout of file uploads. The object's data key is random and lives only in this
process's memory: it is never written to the database, so an object left behind by a crash
cannot be decrypted by anyone (and is named ``{pid}/datasets/uploads/...`` for clean-up).

Once the body is complete, the object is ingested like a stored file (a seekable decrypting
:class:`~hvelv.datasets.service.FileStream`, so Parquet footers are read by seeking), the
lineage records the area ``upload`` and the SHA-256 of the body, and the temporary object is
deleted — after a success and after any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import IO, TYPE_CHECKING, Final, cast

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from hvelv.audit.trail import AuditTrail
from hvelv.crypto.segments import SegmentReader, SegmentWriter
from hvelv.datasets.ingest import IngestReport
from hvelv.datasets.models import Dataset, DatasetVersionRow
from hvelv.datasets.service import FileStream, IngestSpec, ingest_source
from hvelv.errors import HvelvError
from hvelv.files.uploads import used_bytes
from hvelv.projects.models import Project
from hvelv.storage.base import BlobStore, plan_segment_size

if TYPE_CHECKING:
    from hvelv.platform import Platform

__all__ = [
    "FEED_BYTES",
    "SOURCE_AREA",
    "UNKNOWN_LENGTH",
    "TemporaryObject",
    "ingest_upload",
    "receive",
    "room_for",
]

log = logging.getLogger("hvelv.datasets")

SOURCE_AREA: Final = "upload"
#: body bytes gathered before they are encrypted and stored in a worker thread
FEED_BYTES: Final = 1 << 20
#: the length segments are planned for when the body's length is not declared (S3 allows
#: 10,000 parts: segments of 7 MiB, so a body of about 68 GB)
UNKNOWN_LENGTH: Final = 64 << 30


class TooLarge(HvelvError):
    status = 413
    code = "file_too_large"


class TemporaryObject:
    """An encrypted object being written to ``store`` under a random in-memory key."""

    def __init__(
        self, store: BlobStore, pid: str, expected_length: int | None, *, segment_size: int
    ) -> None:
        self.store = store
        self.key = f"{pid}/datasets/uploads/{uuid.uuid4().hex}"
        self._data_key = os.urandom(32)
        self._object_id = os.urandom(16)
        self.segment_size = plan_segment_size(store, expected_length, preferred=segment_size)
        self._writer = SegmentWriter(self._data_key, self._object_id, self.segment_size)
        self._upload: str | None = store.create_parts(self.key)
        self._parts = 0
        self.stored_bytes = 0
        self.sha256 = ""

    @property
    def received(self) -> int:
        return self._writer.plaintext_length

    def write(self, data: bytes | bytearray) -> None:
        """Encrypt ``data``; every sealed segment is stored as the next part."""
        for segment in self._writer.write(data):
            self._put(segment)

    def _put(self, segment: bytes | bytearray) -> None:
        assert self._upload is not None
        self._parts += 1
        self.store.write_part(self.key, self._upload, self._parts, segment)
        self.stored_bytes += len(segment)

    def finish(self) -> None:
        """Seal the last segment and complete the object."""
        self._put(self._writer.finish())
        assert self._upload is not None
        self.store.complete(self.key, self._upload, list(range(1, self._parts + 1)))
        self._upload = None
        self.sha256 = self._writer.sha256_hex()

    @property
    def size(self) -> int:
        return self._writer.plaintext_length

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Plaintext ``[start, end)`` of the completed object."""
        reader = SegmentReader(
            self._data_key,
            self._object_id,
            partial(self.store.read_range, self.key),
            self.stored_bytes,
            segment_size=self.segment_size,
            open_range=partial(self.store.open_range, self.key),
        )
        return reader.iter_range(start, end)

    def discard(self) -> None:
        """Remove what was stored (idempotent, never raises: the caller's error matters)."""
        try:
            if self._upload is not None:
                upload, self._upload = self._upload, None
                self.store.abort(self.key, upload)
            else:
                self.store.delete(self.key)
        except Exception:
            log.exception("could not remove a temporary dataset upload", extra={"key": self.key})


def room_for(platform: Platform, session: Session, project: Project) -> tuple[int, HvelvError]:
    """The most bytes a body may have (``max_file_bytes``, and what the project's quota
    leaves), and the 413 to raise past it."""
    limit = platform.settings.max_file_bytes
    error: HvelvError = TooLarge(f"the file is larger than the maximum of {limit} bytes")
    if project.quota_bytes is not None:
        used = used_bytes(session, project.pid)
        left = max(project.quota_bytes - used, 0)
        if left < limit:
            limit = left
            error = HvelvError(
                f"the project's quota of {project.quota_bytes} bytes would be exceeded "
                f"({used} bytes used or reserved)",
                code="quota_exceeded",
                status=413,
                details={"quota_bytes": project.quota_bytes, "used_bytes": used},
            )
    return limit, error


async def receive(
    obj: TemporaryObject,
    body: AsyncIterator[bytes],
    limit: int,
    too_large: HvelvError,
) -> None:
    """Stream ``body`` into ``obj`` (encrypting and storing in a worker thread, one block in
    flight, so memory stays bounded and a slow store slows the reading), then complete it."""
    pending = bytearray()
    job: asyncio.Future[None] | None = None
    taken = 0
    try:
        async for chunk in body:
            if not chunk:
                continue
            taken += len(chunk)
            if taken > limit:
                raise too_large
            pending += chunk
            if len(pending) >= FEED_BYTES:
                if job is not None:
                    await job
                block, pending = pending, bytearray()
                job = asyncio.ensure_future(run_in_threadpool(obj.write, block))
    except BaseException:
        if job is not None:  # let the block in flight settle before the object is discarded
            with contextlib.suppress(BaseException):
                await job
        raise
    if job is not None:
        await job
    if pending:
        await run_in_threadpool(obj.write, pending)
    await run_in_threadpool(obj.finish)


def ingest_upload(
    platform: Platform,
    session: Session,
    trail: AuditTrail,
    pid: str,
    spec: IngestSpec,
    obj: TemporaryObject,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[Dataset, DatasetVersionRow, IngestReport]:
    """Ingest the completed temporary object (its name, for the format, is ``spec.path``)."""
    source = cast(IO[bytes], FileStream(obj, spec.path or "upload"))
    return ingest_source(platform, session, trail, pid, spec, source, progress=progress)
