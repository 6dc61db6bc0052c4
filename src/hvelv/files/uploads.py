"""Uploads: tus state lives in the database and the blob store, not in process memory.

* An upload is a row (length, durable offset, where its blob goes, its data key id) and a
  multipart upload in a blob store. Its bytes are encrypted on arrival into the segment
  stream of :mod:`hvelv.crypto.segments`; several whole segments make one stored part.
* A PATCH takes a **lease** on the row (owner = this replica + process + request) and
  renews it with every part; a second PATCH meanwhile gets 423. A lease whose time has
  passed, or that belongs to an earlier process on this node (a restart), is stale: the
  next request takes the upload over and first **reconciles** it with the store (stored
  parts + the checkpointed tail are the truth), so any replica can continue any upload.
* The durable offset in the row never runs ahead of the stored bytes. When a PATCH ends
  in the middle of a segment, the partial segment is sealed and stored as a small "tail"
  object, so the reported offset is exactly what was received.
* Live segment writers are cached per process only to keep the running SHA-256; a writer
  rebuilt from the store computes the hash from the completed blob instead.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from hvelv.audit.trail import AuditTrail
from hvelv.crypto.segments import IntegrityError, SegmentWriter, encrypted_size
from hvelv.errors import Conflict, HvelvError, InvalidInput, NotFound
from hvelv.files import catalog, tus
from hvelv.files.blobs import Blob, FileReader, file_sha256, new_blob_name
from hvelv.files.models import Upload, UploadLink
from hvelv.files.paths import Area, clean_path
from hvelv.files.tus import TusError
from hvelv.platform import Platform
from hvelv.projects import keys
from hvelv.projects.models import Project
from hvelv.storage.base import ObjectNotFoundError, UploadNotFoundError, plan_segment_size

BOOT: Final = uuid.uuid4().hex[:12]
#: the Upload-Metadata key by which a partial upload tells its place in its concatenation
#: (0 for the first; see hashed_as_it_arrives)
PART_INDEX: Final = "partIndex"
PARTS_IN_FLIGHT: Final = (
    2  # parts encrypted but not yet stored, per upload  # this process; a restart gets a new one
)


class Gone(HvelvError):
    status = 410
    code = "upload_gone"


class Locked(HvelvError):
    status = 423
    code = "upload_locked"


def now_utc() -> datetime:
    return datetime.now(UTC)


def _tail_key(upload: Upload) -> str:
    return f"{upload.storage_key}.tail"


def _owner(platform: Platform) -> str:
    return f"{platform.settings.node_name}/{BOOT}/{secrets.token_hex(4)}"


def _stale(platform: Platform, upload: Upload, now: datetime) -> bool:
    """The upload's lease, if any, no longer protects a live request."""
    if upload.lease_owner is None or upload.lease_until is None:
        return False
    if upload.lease_until <= now:
        return True
    node, _, rest = upload.lease_owner.partition("/")
    return node == platform.settings.node_name and not rest.startswith(BOOT + "/")


# -- the per-process cache of live writers ----------------------------------------------


@dataclass
class _Live:
    writer: SegmentWriter
    next_part: int


_LIVE: dict[str, _Live] = {}
_LIVE_LOCK = threading.Lock()


def _cached(upload: Upload) -> _Live | None:
    with _LIVE_LOCK:
        live = _LIVE.get(upload.id)
    if live is not None and live.writer.plaintext_length == upload.offset:
        return live
    return None


def _remember(upload_id: str, live: _Live | None) -> None:
    with _LIVE_LOCK:
        if live is None:
            _LIVE.pop(upload_id, None)
        else:
            _LIVE[upload_id] = live


# -- creation ---------------------------------------------------------------------------------


@dataclass
class NewUpload:
    area: Area
    length: int | None  # None: deferred (Upload-Defer-Length: 1)
    metadata: dict[str, str | None]
    metadata_header: str
    creator: str
    link_id: str | None = None
    partial: bool = False


# browser clients send these for a file picked outside any folder (Uppy: "null")
_NO_VALUE = frozenset({"null", "undefined"})


def _path_from(metadata: dict[str, str | None]) -> str:
    for name in ("relativePath", "filename", "name"):
        value = metadata.get(name)
        if value and value not in _NO_VALUE:
            return clean_path(value)
    raise InvalidInput(
        "Upload-Metadata must name the file (filename, or relativePath for a folder upload)",
        code="missing_filename",
    )


def hashed_as_it_arrives(partial: bool, metadata: Mapping[str, str | None]) -> bool:
    """Whether an upload's plaintext is hashed as it arrives.

    Always, except for a partial upload whose ``Upload-Metadata`` says it is not the first
    of its concatenation (:data:`PART_INDEX` a whole number above 0; our CLI sends it). A
    concatenation hashes the partials in order, going on from the first one's state, so
    hashing the others as they arrive was wasted: 0.75 GiB of SHA-256 per GiB with four.
    A client that does not say (stock tus clients), or says it wrongly, gets every partial
    hashed as before, or the concatenation hashing all of them: slower, never wrong.
    """
    if not partial:
        return True
    index = metadata.get(PART_INDEX)
    return index is None or not index.isascii() or not index.isdigit() or int(index) == 0


def _content_type(metadata: dict[str, str | None]) -> str:
    value = metadata.get("filetype") or metadata.get("type") or "application/octet-stream"
    if len(value) > 255 or any(ord(ch) < 32 for ch in value):
        raise InvalidInput("the file type in Upload-Metadata is invalid", code="invalid_metadata")
    return value


def used_bytes(session: Session, pid: str) -> int:
    """Bytes a project holds or has reserved: files (trash included) and open uploads
    (their length, or while it is deferred what they have received or may receive)."""
    pending = session.scalar(
        select(func.coalesce(func.sum(func.coalesce(Upload.length, Upload.reserved)), 0)).where(
            Upload.project_id == pid,
            Upload.file_id.is_(None),
            Upload.concat != "final",
        )
    )
    return catalog.total_size(session, pid) + int(pending or 0)


def _check_space(
    platform: Platform, session: Session, project: Project, length: int, *, held: int = 0
) -> None:
    """``length`` more bytes fit the maximum file size and the project's quota (``held``:
    bytes of this upload already counted as used)."""
    limit = platform.settings.max_file_bytes
    if length > limit:
        raise TusError(
            413, "file_too_large", f"the file is larger than the maximum of {limit} bytes"
        )
    if project.quota_bytes is not None:
        used = used_bytes(session, project.pid) - held
        if used + length > project.quota_bytes:
            raise TusError(
                413,
                "quota_exceeded",
                f"the project's quota of {project.quota_bytes} bytes would be exceeded "
                f"({used} bytes used or reserved, {length} more requested)",
                details={"quota_bytes": project.quota_bytes, "used_bytes": used},
            )


def _use_link(session: Session, link_id: str, length: int, *, count_use: bool) -> None:
    """Reserve ``length`` bytes of a link's allowance; count one use per file delivered.

    The parts of a parallel (concatenated) upload reserve their bytes but are one use,
    counted by the final upload; a partial still needs a use to be left.
    """
    link = session.get(UploadLink, link_id)
    if link is None:  # authenticated a moment ago in this transaction
        raise NotFound("no such upload link")
    if link.max_uses is not None and link.uses >= link.max_uses:
        raise TusError(403, "link_used_up", "the upload link has been used up")
    if link.max_bytes is not None and link.bytes_reserved + length > link.max_bytes:
        raise TusError(
            413,
            "link_size_exceeded",
            f"the upload link allows {link.max_bytes - link.bytes_reserved} more bytes",
        )
    if count_use:
        link.uses += 1
    link.bytes_reserved += length


def create(
    platform: Platform, session: Session, trail: AuditTrail, project: Project, new: NewUpload
) -> Upload:
    """Register an upload (and, for 0 bytes, finish it at once)."""
    path = None if new.partial else _path_from(new.metadata)
    content_type = _content_type(new.metadata)
    _check_space(platform, session, project, new.length or 0)
    if new.link_id is not None:
        _use_link(session, new.link_id, new.length or 0, count_use=not new.partial)
    store = platform.store()
    storage_key, oid = new_blob_name(project.pid)
    key_id, raw = keys.new_data_key(session, platform.keyring, project.pid)
    # a deferred upload plans for the default segment size; deferred_limit() then caps it
    segment_size = plan_segment_size(store, new.length, preferred=platform.settings.segment_size)
    now = now_utc()
    upload = Upload(
        id=uuid.uuid4().hex,
        project_id=project.pid,
        area=new.area.value,
        path=path,
        content_type=content_type,
        metadata_header=new.metadata_header,
        length=new.length,
        offset=0,
        reserved=0,
        concat="partial" if new.partial else "none",
        partials=[],
        store=platform.store_name,
        storage_key=storage_key,
        store_upload_id=None,
        key_id=key_id,
        segment_size=segment_size,
        creator=new.creator,
        link_id=new.link_id,
        status="active",
        created_at=now,
        expires_at=now + timedelta(hours=platform.settings.upload_expiry_hours),
    )
    writer = SegmentWriter(
        raw,
        bytes.fromhex(oid),
        segment_size,
        hashed=hashed_as_it_arrives(new.partial, new.metadata),
    )
    if new.length == 0:
        store.put(storage_key, [writer.finish()])
        session.add(upload)
        session.flush()
        _complete(platform, session, trail, upload, _sha256_of(writer))
        return upload
    upload.store_upload_id = store.create_parts(storage_key)
    session.add(upload)
    session.flush()
    _remember(upload.id, _Live(writer, 1))
    trail.record(
        "files.upload_start",
        project_id=project.pid,
        target=_target(upload),
        details={"upload": upload.id, "length": new.length, "link": new.link_id},
    )
    return upload


def _target(upload: Upload) -> str:
    return f"{upload.area}:{upload.path}" if upload.path else f"{upload.area}:partial"


def known_length(upload: Upload) -> int:
    """The length of an upload that has one (complete uploads always do)."""
    assert upload.length is not None, "the upload's length is deferred"
    return upload.length


# -- deferred length (tus creation-defer-length) ----------------------------------------------

# parts a store's object may use, less a margin (as plan_segment_size)
_PART_MARGIN: Final = 100


def deferred_limit(platform: Platform, upload: Upload) -> int:
    """The most bytes an upload of deferred length may grow to: the maximum file size, and
    what fits the store's part count at the segment size chosen without knowing the length
    (every stored part but the last holds at least one whole segment)."""
    limit = platform.settings.max_file_bytes
    max_parts = platform.store(upload.store).max_parts
    if max_parts:
        limit = min(limit, max(1, max_parts - _PART_MARGIN) * upload.segment_size)
    return limit


def _settle_reservation(session: Session, upload: Upload, offset: int) -> None:
    """A deferred upload holds exactly its received bytes again (after a PATCH, or a
    crashed one); its link's allowance gets back what was reserved but not received."""
    if upload.length is not None or upload.reserved == offset:
        return
    if upload.link_id is not None:
        link = session.get(UploadLink, upload.link_id)
        if link is not None:
            link.bytes_reserved = max(0, link.bytes_reserved - (upload.reserved - offset))
    upload.reserved = offset


def declare_length(
    platform: Platform, session: Session, project: Project, upload: Upload, length: int
) -> None:
    """``Upload-Length`` sent on a PATCH: set a deferred length once, checking the maximum
    file size, the quota and the link's allowance now that the size is known."""
    if upload.length is not None:
        if length != upload.length:
            raise TusError(
                400,
                "upload_length_set",
                f"the upload's length is already {upload.length}; it cannot be changed",
            )
        return
    if length < upload.offset:
        raise TusError(
            400,
            "invalid_header",
            f"Upload-Length {length} is less than the {upload.offset} bytes already received",
        )
    _settle_reservation(session, upload, upload.offset)
    limit = deferred_limit(platform, upload)
    if length > limit:
        raise TusError(
            413,
            "file_too_large",
            f"the file is larger than the maximum of {limit} bytes for an upload whose "
            "length was deferred",
        )
    _check_space(platform, session, project, length, held=upload.reserved)
    link = session.get(UploadLink, upload.link_id) if upload.link_id is not None else None
    if link is not None:  # the link holds this upload's received bytes; now all of it
        more = length - upload.reserved
        if link.max_bytes is not None and link.bytes_reserved + more > link.max_bytes:
            raise TusError(
                413,
                "link_size_exceeded",
                f"the upload link allows {link.max_bytes - link.bytes_reserved} more bytes",
            )
        link.bytes_reserved += more
    upload.length = length
    upload.reserved = 0
    session.flush()


def _reserve_deferred(
    platform: Platform, session: Session, upload: Upload, incoming: int | None
) -> TusError:
    """Before a PATCH of an upload whose length is deferred: reserve what it may bring (the
    request's Content-Length, or all that is left) against the maximum file size, the quota
    and the link. Returns the error for a body that brings more."""
    upload.reserved = upload.offset
    limits: list[tuple[int, TusError]] = []
    limit = deferred_limit(platform, upload)
    limits.append(
        (
            limit - upload.offset,
            TusError(
                413,
                "file_too_large",
                f"the file would be larger than the maximum of {limit} bytes for an upload "
                "whose length was deferred",
            ),
        )
    )
    project = session.get(Project, upload.project_id)
    if project is not None and project.quota_bytes is not None:
        used = used_bytes(session, upload.project_id)
        limits.append(
            (
                project.quota_bytes - used,
                TusError(
                    413,
                    "quota_exceeded",
                    f"the project's quota of {project.quota_bytes} bytes would be exceeded "
                    f"({used} bytes used or reserved)",
                    details={"quota_bytes": project.quota_bytes, "used_bytes": used},
                ),
            )
        )
    link = session.get(UploadLink, upload.link_id) if upload.link_id is not None else None
    if link is not None and link.max_bytes is not None:
        left = link.max_bytes - link.bytes_reserved
        limits.append(
            (left, TusError(413, "link_size_exceeded", f"the upload link allows {left} more bytes"))
        )
    room, error = min(limits, key=lambda item: item[0])
    room = max(0, room)
    if incoming is not None and incoming > room:
        raise error
    want = room if incoming is None else incoming
    upload.reserved = upload.offset + want
    if link is not None:
        link.bytes_reserved += want
    return error


# -- finding and leasing ----------------------------------------------------------------------


def find(
    session: Session, pid: str, area: Area, upload_id: str, creator: str, *, lock: bool = False
) -> Upload:
    """The caller's upload (uploads are private to whoever started them)."""
    query = select(Upload).where(Upload.id == upload_id)
    if lock:
        query = query.with_for_update()
    upload = session.scalars(query).first()
    if upload is None or upload.project_id != pid or upload.area != area.value:
        raise NotFound("no such upload", code="upload_not_found")
    if upload.creator != creator:
        raise NotFound("no such upload", code="upload_not_found")
    if upload.status == "active" and upload.expires_at <= now_utc():
        raise Gone("the upload has expired; start it again")
    return upload


def current_offset(platform: Platform, session: Session, upload: Upload) -> int:
    """The durable offset, reconciling with the store after a crash (HEAD)."""
    if upload.status != "active":
        return known_length(upload)
    now = now_utc()
    if _stale(platform, upload, now):
        live = _reconcile(platform, session, upload)
        upload.lease_owner = None
        upload.lease_until = None
        if live is None:
            return known_length(upload)
        _settle_reservation(session, upload, upload.offset)
    return upload.offset


@dataclass
class Lease:
    upload_id: str
    owner: str
    live: _Live
    upload: Upload  # detached snapshot taken when the lease was acquired
    blob: Blob
    store_upload_id: str
    # a deferred upload: the error for a body bringing more than was reserved
    over_limit: TusError | None = None
    final_sent: bool = False
    parts_written: list[int] = field(default_factory=list)


def acquire(
    platform: Platform,
    session: Session,
    upload: Upload,
    offset: int,
    incoming: int | None = None,
    declared: int | None = None,
) -> Lease | None:
    """Lease an active upload for one PATCH at ``offset`` bringing ``incoming`` bytes (None:
    unknown) and perhaps declaring the deferred length; None: it was already complete. An
    upload whose length is still deferred reserves what the request may bring against the
    limits first."""
    if upload.concat == "final":
        raise TusError(403, "final_upload", "a final concatenated upload cannot be patched")
    if upload.status != "active":
        raise TusError(
            409,
            "offset_mismatch",
            "the upload is already complete",
            headers={"Upload-Offset": str(known_length(upload))},
        )
    now = now_utc()
    if upload.lease_owner is not None and not _stale(platform, upload, now):
        wait = max(1, int((upload.lease_until or now).timestamp() - now.timestamp()))
        raise Locked(
            "another request is writing this upload; try again shortly",
            headers={"Retry-After": str(min(wait, 30))},
        )
    stale = upload.lease_owner is not None
    live = None if stale else _cached(upload)
    if live is None:
        live = _reconcile(platform, session, upload)
        if live is None:
            return None
    if offset != upload.offset:
        raise TusError(
            409,
            "offset_mismatch",
            f"Upload-Offset is {offset} but the upload is at {upload.offset}",
            headers={"Upload-Offset": str(upload.offset)},
        )
    over_limit = None
    _settle_reservation(session, upload, upload.offset)  # after a crashed PATCH
    if declared is not None:
        project = session.get(Project, upload.project_id)
        assert project is not None
        declare_length(platform, session, project, upload, declared)
    if upload.length is None:
        over_limit = _reserve_deferred(platform, session, upload, incoming)
    owner = _owner(platform)
    upload.lease_owner = owner
    upload.lease_until = now + timedelta(seconds=platform.settings.upload_lease_seconds)
    session.flush()
    assert upload.store_upload_id is not None
    session.expunge(upload)
    return Lease(
        upload.id,
        owner,
        live,
        upload,
        _blob_of(upload),
        upload.store_upload_id,
        over_limit,
    )


def _blob_of(upload: Upload) -> Blob:
    return Blob(
        store=upload.store,
        key=upload.storage_key,
        oid=upload.storage_key.rsplit("/", 1)[-1],
        key_id=upload.key_id,
        segment_size=upload.segment_size,
        size=upload.offset if upload.length is None else upload.length,
    )


def _reconcile(platform: Platform, session: Session, upload: Upload) -> _Live | None:
    """Rebuild the writer from what the store holds; finish an upload whose blob exists."""
    store = platform.store(upload.store)
    raw = keys.data_key(session, platform.keyring, upload.project_id, upload.key_id)
    blob = _blob_of(upload)
    assert upload.store_upload_id is not None
    try:
        parts = store.list_parts(upload.storage_key, upload.store_upload_id)
    except UploadNotFoundError:
        # completed in the store but not recorded (a crash in between): record it now
        if (
            upload.length is not None
            and store.exists(upload.storage_key)
            and store.size(upload.storage_key) == encrypted_size(upload.length, upload.segment_size)
        ):
            reader = FileReader(platform, session, upload.project_id, [blob], cache=False)
            trail = AuditTrail(session, platform.ledger, upload.creator)
            _complete(platform, session, trail, upload, file_sha256(reader))
            _remember(upload.id, None)
            return None
        raise Gone("the upload's stored data is gone; start it again") from None
    try:
        tail = store.read_bytes(_tail_key(upload))
    except ObjectNotFoundError:
        tail = None
    stored = sum(part.size for part in parts)
    try:
        writer = SegmentWriter.resume(
            raw,
            blob.object_id,
            segment_size=upload.segment_size,
            stored_bytes=stored,
            tail=tail,
        )
    except IntegrityError as exc:
        raise HvelvError(
            f"the upload's stored data failed its integrity check ({exc}); start it again",
            code="integrity_error",
            status=500,
        ) from None
    upload.offset = writer.plaintext_length
    live = _Live(writer, len(parts) + 1)
    _remember(upload.id, live)
    return live


# -- streaming writes (called from a worker thread, one at a time per lease) -----------------


class LeaseLost(Conflict):
    code = "upload_lease_lost"


class PartWriter:
    """Feeds plaintext to the segment writer and stores whole segments as parts.

    Encryption happens in the caller's thread; storing parts (write + fsync + the offset
    record) happens in one writer thread per upload, at most :data:`PARTS_IN_FLIGHT` parts
    behind, so receiving, encrypting and writing overlap. When the writer falls behind,
    ``feed`` blocks, which stops reading the request body (TCP back-pressure).
    """

    def __init__(self, platform: Platform, lease: Lease) -> None:
        self.platform = platform
        self.lease = lease
        self.store = platform.store(lease.blob.store)
        self.segments_per_part = max(
            1, platform.settings.upload_part_bytes // lease.upload.segment_size
        )
        self.ready: list[bytearray] = []
        self.received = 0
        self.defer = False  # hold segments in memory until the request's checksum is known
        # the offset recorded when the lease was taken is durable (parts + stored tail);
        # ``stored`` counts the plaintext in stored parts only
        self.initial = lease.upload.offset
        self.stored = self.writer.plaintext_length - self.writer.buffered
        self.handed = self.stored  # plaintext given to the writer thread (stored or queued)
        self._queue: queue.Queue[tuple[bytes | bytearray, int] | None] = queue.Queue(
            maxsize=PARTS_IN_FLIGHT
        )
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def writer(self) -> SegmentWriter:
        return self.lease.live.writer

    def durable(self) -> int:
        return max(self.initial, self.stored)

    def feed(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Encrypt ``chunks`` (pieces of the request body, in order) and hand on whole parts."""
        for data in chunks:
            self.received += len(data)
            self.ready.extend(self.writer.write(data))
        while not self.defer and len(self.ready) >= self.segments_per_part:
            batch = self.ready[: self.segments_per_part]
            del self.ready[: self.segments_per_part]
            self._write_part(batch, len(batch) * self.writer.segment_size)

    def _write_part(self, segments: list[bytearray], plaintext: int) -> None:
        """Hand a part to the writer thread (blocks while it is PARTS_IN_FLIGHT behind)."""
        self._raise_stored_error()
        data = segments[0] if len(segments) == 1 else b"".join(segments)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._store_parts, name=f"upload-{self.lease.upload_id[:8]}", daemon=True
            )
            self._thread.start()
        self.handed += plaintext
        self._queue.put((data, plaintext))

    def _store_parts(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain after a failure; nothing more is stored
            data, plaintext = item
            try:
                # renew the lease (recording what is durable so far), then store the part
                self._record(self.durable())
                live = self.lease.live
                self.store.write_part(
                    self.lease.blob.key,
                    self.lease.store_upload_id,
                    live.next_part,
                    data,
                    # not kept in the page cache: even a partial upload read back at its
                    # concatenation measured faster reading from disk than filling the
                    # cache with every part as it was written
                    cache=False,
                )
                live.next_part += 1
                self.stored += plaintext
            except BaseException as exc:  # handed to the request thread
                self._error = exc

    def _settle(self) -> None:
        """Wait until every handed-over part is stored; raise what the writer hit."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise_stored_error()

    def _raise_stored_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _record(self, offset: int, *, release: bool = False) -> None:
        settings = self.platform.settings
        until = now_utc() + timedelta(seconds=settings.upload_lease_seconds)
        values: dict[str, Any] = {"offset": offset}
        if release:
            values.update(lease_owner=None, lease_until=None)
        else:
            values["lease_until"] = until
        with self.platform.db.write() as session:
            done = session.execute(
                update(Upload)
                .where(Upload.id == self.lease.upload_id, Upload.lease_owner == self.lease.owner)
                .values(**values)
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost("another request took this upload over")
            if release:
                _release_reservation(session, self.lease.upload_id)

    def flush(self) -> int:
        """Store everything received (whole segments as a part, the rest as the tail) and
        record the offset; release the lease. Returns the new durable offset."""
        if self.ready:
            batch, self.ready = self.ready, []
            self._write_part(batch, len(batch) * self.writer.segment_size)
        self._settle()
        offset = self.writer.plaintext_length
        tail_key = _tail_key(self.lease.upload)
        if self.writer.buffered:
            self.store.put_bytes(tail_key, self.writer.checkpoint())
        else:
            self.store.delete(tail_key)
        self._record(offset, release=True)
        return offset

    def finish(self, trail_for: Callable[[Session], AuditTrail]) -> None:
        """The last byte arrived: store the final part, complete the blob, record the file."""
        final = self.writer.finish()
        batch, self.ready = [*self.ready, final], []
        self._write_part(batch, self.writer.plaintext_length - self.handed)
        self._settle()
        live = self.lease.live
        blob = self.lease.blob
        self.store.complete(blob.key, self.lease.store_upload_id, list(range(1, live.next_part)))
        self.store.delete(_tail_key(self.lease.upload))
        partial = self.lease.upload.concat == "partial"
        sha: str | None = None
        if self.writer.sha256_known:
            sha = self.writer.sha256_hex()
            if partial:
                _PARTIAL_HASHES.keep(self.lease.upload_id, self.writer.sha256_state())
        elif hashed_as_it_arrives(
            partial, tus.parse_metadata(self.lease.upload.metadata_header or None)
        ):  # rebuilt after a restart: hash the stored blob (outside any write lock)
            with self.platform.db.read() as session:
                reader = FileReader(
                    self.platform, session, self.lease.upload.project_id, [blob], cache=False
                )
            sha = file_sha256(reader)
        with self.platform.db.write() as session:
            upload = session.get(Upload, self.lease.upload_id)
            if upload is None or upload.lease_owner != self.lease.owner:
                raise LeaseLost("another request took this upload over")
            upload.offset = known_length(upload)
            upload.lease_owner = None
            upload.lease_until = None
            _complete(self.platform, session, trail_for(session), upload, sha)
        _remember(self.lease.upload_id, None)

    def abandon(self) -> None:
        """After a failure: forget the writer (the next request rebuilds it from the store)
        and release the lease if it is still ours. Never raises."""
        _remember(self.lease.upload_id, None)
        try:
            with contextlib.suppress(BaseException):
                self._settle()
            self.discard()
        except Exception:  # the original error matters more
            logging.getLogger("hvelv.files").exception("could not release an upload lease")

    def discard(self) -> None:
        """Forget this request's unsaved bytes (checksum mismatch) and release the lease."""
        _remember(self.lease.upload_id, None)
        with self.platform.db.write() as session:
            done = session.execute(
                update(Upload)
                .where(Upload.id == self.lease.upload_id, Upload.lease_owner == self.lease.owner)
                .values(lease_owner=None, lease_until=None)
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                _release_reservation(session, self.lease.upload_id)


def _release_reservation(session: Session, upload_id: str) -> None:
    """A PATCH ended: a deferred upload holds what is durably stored (the recorded offset)."""
    upload = session.get(Upload, upload_id)
    if upload is not None:
        _settle_reservation(session, upload, upload.offset)


# -- completion -------------------------------------------------------------------------------


def _sha256_of(writer: SegmentWriter) -> str | None:
    return writer.sha256_hex() if writer.sha256_known else None


def _complete(
    platform: Platform, session: Session, trail: AuditTrail, upload: Upload, sha256: str | None
) -> None:
    """Record a finished upload: a partial (``sha256`` None if it was not hashed, see
    :func:`hashed_as_it_arrives`), or a file."""
    length = known_length(upload)
    upload.status = "completed"
    upload.offset = length
    upload.sha256 = sha256
    if upload.concat == "partial":
        details: dict[str, Any] = {"upload": upload.id, "size": length}
        if sha256 is not None:
            details["sha256"] = sha256
        trail.record(
            "files.upload_partial",
            project_id=upload.project_id,
            target=_target(upload),
            details=details,
        )
        return
    assert upload.path is not None
    assert sha256 is not None  # a file's plaintext is always hashed
    stored = catalog.add_file(
        session,
        trail,
        pid=upload.project_id,
        area=Area(upload.area),
        path=upload.path,
        size=length,
        sha256=sha256,
        content_type=upload.content_type,
        uploader=upload.creator,
        blobs=[_blob_of(upload)],
        via={"upload": upload.id, "link": upload.link_id},
        retention_days=platform.settings.trash_retention_days,
    )
    upload.file_id = stored.id


def _partials(
    session: Session, project: Project, new: NewUpload, partial_ids: tuple[str, ...]
) -> list[Upload]:
    parts: list[Upload] = []
    for part_id in partial_ids:
        part = session.get(Upload, part_id)
        if (
            part is None
            or part.project_id != project.pid
            or part.area != new.area.value
            or part.creator != new.creator
        ):
            raise TusError(400, "invalid_concat", f"no partial upload {part_id} of yours here")
        if part.concat != "partial":
            raise TusError(400, "invalid_concat", f"upload {part_id} is not a partial upload")
        if part.status != "completed":
            raise TusError(400, "invalid_concat", f"partial upload {part_id} is not finished")
        if part.file_id is not None or part.id in {p.id for p in parts}:
            raise TusError(400, "invalid_concat", f"partial upload {part_id} is already used")
        parts.append(part)
    return parts


class _PartialHashes:
    """The running SHA-256 of partial uploads finished by this process, newest kept.

    SHA-256 cannot be combined from the partials' digests, so a concatenation reads the
    partials back and hashes them in order. The first partial's state is usually still
    here (it was hashed as it arrived): hashing goes on from it, and only the partials
    after it are read back. A restart or another replica finds nothing and reads all.
    """

    LIMIT = 256

    def __init__(self) -> None:
        self._states: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, upload_id: str, state: Any) -> None:
        with self._lock:
            self._states[upload_id] = state
            while len(self._states) > self.LIMIT:
                self._states.popitem(last=False)

    def take(self, upload_id: str, sha256: str | None) -> Any:
        """The state of a partial whose digest is ``sha256``, or None."""
        with self._lock:
            state = self._states.pop(upload_id, None)
        if state is None or sha256 is None or state.hexdigest() != sha256:
            return None
        return state


_PARTIAL_HASHES = _PartialHashes()


@dataclass
class Concatenation:
    """The partials of a final upload, checked, ready to be hashed in order."""

    reader: FileReader
    head: Any  # the first partial's SHA-256 state (None: hash everything)
    head_length: int

    def sha256(self) -> str:
        if self.head is None:
            return file_sha256(self.reader)
        # the first partial is not read back: still make sure its blob is there, whole
        self.reader.verify_length(0)
        return file_sha256(self.reader, self.head.copy(), self.head_length)


def concatenation_reader(
    platform: Platform,
    session: Session,
    project: Project,
    new: NewUpload,
    partial_ids: tuple[str, ...],
) -> Concatenation:
    """Check a final upload's partials and return them for hashing (before the write
    transaction)."""
    _path_from(new.metadata)
    _content_type(new.metadata)
    parts = _partials(session, project, new, partial_ids)
    if sum(known_length(p) for p in parts) > platform.settings.max_file_bytes:
        raise TusError(413, "file_too_large", "the concatenated file is too large")
    reader = FileReader(platform, session, project.pid, [_blob_of(p) for p in parts], cache=False)
    head = _PARTIAL_HASHES.take(parts[0].id, parts[0].sha256)
    return Concatenation(reader, head, known_length(parts[0]))


def concatenate(
    platform: Platform,
    session: Session,
    trail: AuditTrail,
    project: Project,
    new: NewUpload,
    partial_ids: tuple[str, ...],
    sha256: str,
) -> Upload:
    """Create the final upload of a concatenation: one file made of the partials' blobs
    (nothing is copied or re-encrypted). ``sha256`` is the hash of their plaintext."""
    path = _path_from(new.metadata)
    content_type = _content_type(new.metadata)
    parts = _partials(session, project, new, partial_ids)  # again: things may have moved on
    if new.link_id is not None:
        _use_link(session, new.link_id, 0, count_use=True)
    blobs = [_blob_of(p) for p in parts]
    length = sum(known_length(p) for p in parts)
    now = now_utc()
    final = Upload(
        id=uuid.uuid4().hex,
        project_id=project.pid,
        area=new.area.value,
        path=path,
        content_type=content_type,
        metadata_header=new.metadata_header,
        length=length,
        offset=length,
        concat="final",
        partials=[p.id for p in parts],
        store=parts[0].store,
        storage_key=parts[0].storage_key,
        store_upload_id=None,
        key_id=parts[0].key_id,
        segment_size=parts[0].segment_size,
        creator=new.creator,
        link_id=new.link_id,
        status="completed",
        sha256=sha256,
        created_at=now,
        expires_at=now + timedelta(hours=platform.settings.upload_expiry_hours),
    )
    session.add(final)
    stored = catalog.add_file(
        session,
        trail,
        pid=project.pid,
        area=new.area,
        path=path,
        size=length,
        sha256=sha256,
        content_type=content_type,
        uploader=new.creator,
        blobs=blobs,
        via={"upload": final.id, "partials": [p.id for p in parts], "link": new.link_id},
        retention_days=platform.settings.trash_retention_days,
    )
    final.file_id = stored.id
    for part in parts:
        part.file_id = stored.id
    session.flush()
    return final


# -- termination and expiry -------------------------------------------------------------------


def terminate(platform: Platform, session: Session, trail: AuditTrail, upload: Upload) -> None:
    """Discard an upload (tus termination); its stored bytes are removed."""
    now = now_utc()
    if upload.lease_owner is not None and not _stale(platform, upload, now):
        raise Locked("another request is writing this upload; try again shortly")
    if upload.status == "completed" and (upload.concat != "partial" or upload.file_id):
        raise TusError(409, "upload_complete", "the upload is complete; delete the file instead")
    discard_stored(platform, upload)
    trail.record(
        "files.upload_terminate",
        project_id=upload.project_id,
        target=_target(upload),
        details={"upload": upload.id, "offset": upload.offset},
    )
    session.delete(upload)
    _remember(upload.id, None)


def discard_stored(platform: Platform, upload: Upload) -> None:
    """Remove an unfinished upload's parts and tail, or an unused partial's blob."""
    store = platform.store(upload.store)
    if upload.status == "active" and upload.store_upload_id is not None:
        store.abort(upload.storage_key, upload.store_upload_id)
    elif upload.file_id is None:
        store.delete(upload.storage_key)
    store.delete(_tail_key(upload))
