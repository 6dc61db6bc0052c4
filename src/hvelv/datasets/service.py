"""Datasets in the platform: ingest from project files, metadata, consent-enforced queries.

No HTTP here. What it ties together:

* **ingest** (:func:`create_version`): a file of the project's ``import`` or ``files`` area is
  read through a decrypting, seekable stream (:class:`FileStream`) into
  :func:`hvelv.datasets.ingest.ingest`, with the consent store's keyed HMAC as pseudonymiser
  (``None`` for numbers not enrolled in the project). The write transaction is committed before
  the (possibly long) ingest runs, so it does not hold the database's write lock; the version,
  its new participant keys and the audit event are written in one transaction afterwards. Ingests
  of one project are serialised in the process, and the key registry's size is checked again
  when writing (unique keys in the table make a concurrent ingest elsewhere fail cleanly);
* **queries** (:func:`run_query`): the SQL is vetted first (nothing is logged for refused SQL
  except a refusal audit event), the purpose must be one of the project's approved purposes,
  then one consent snapshot per data class of the datasets read is taken and logged in the
  consent decision log (kind ``query``, with the ledger position and the requester) and the
  audit trail, in one short write transaction, *before* the query runs; the permit masks
  (intersected when the datasets have different data classes) go to the project's
  :class:`~hvelv.datasets.engine.QueryEngine`.

:class:`DatasetRuntime` (one per process, on the :class:`~hvelv.platform.Platform`) holds the
per-project engines (working copies in memory) and a cache of the participant key registry;
both are accelerators rebuilt from the database and the blob store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import pyarrow as pa
from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hvelv.audit.ledger import AuditRecord, Outcome
from hvelv.audit.trail import AuditTrail
from hvelv.consent import decisions
from hvelv.consent.duo import Purpose
from hvelv.consent.mapping import DATA_CLASSES, duo_code
from hvelv.consent.model import Use
from hvelv.consent.models import Participant
from hvelv.consent.pseudonyms import ProjectSecrets
from hvelv.datasets.engine import QueryResult
from hvelv.datasets.errors import DatasetError, DatasetNotQueryable
from hvelv.datasets.ingest import DatasetVersion, IngestOptions, IngestReport, Lineage, ingest
from hvelv.datasets.keys import ParticipantKeys, Permits
from hvelv.datasets.models import Dataset, DatasetVersionRow, ParticipantKeyRow
from hvelv.datasets.runtime import DatasetRuntime
from hvelv.datasets.sql_vet import RESERVED_PREFIX, vet_query
from hvelv.datasets.storage import BlobLocation, StoredObject
from hvelv.errors import Conflict, Forbidden, HvelvError, InvalidInput, NotFound
from hvelv.files import catalog
from hvelv.files.blobs import FileReader, blobs_of
from hvelv.files.paths import Area
from hvelv.projects import keys as project_keys
from hvelv.projects.models import DataKey, Project

if TYPE_CHECKING:
    from hvelv.platform import Platform

__all__ = [
    "AuditContext",
    "Deletion",
    "FileStream",
    "IngestSpec",
    "QueryOutcome",
    "QuerySpec",
    "create_version",
    "delete_dataset",
    "delete_version",
    "get_dataset",
    "ingest_source",
    "list_datasets",
    "run_query",
    "update_dataset",
    "versions_of",
]

RESERVED_NAMES = frozenset({"query"})


# -- reading a stored file -------------------------------------------------------------------


class RangeReader(Protocol):
    """Plaintext of an encrypted object by range (:class:`~hvelv.files.blobs.FileReader`)."""

    @property
    def size(self) -> int: ...

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...


class FileStream(io.RawIOBase):
    """A seekable, read-only binary file over a stored (encrypted) project file or object.

    Sequential reads continue one decrypting iterator; a seek starts a new one at the segment
    holding the new position. Plaintext stays in memory, one segment at a time.
    """

    def __init__(self, reader: RangeReader, name: str) -> None:
        super().__init__()
        self._reader = reader
        self.name = name
        self._pos = 0
        self._it: Iterator[bytes] | None = None
        self._it_pos = -1
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._reader.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _chunk(self) -> memoryview:
        if self._it is None or self._it_pos != self._pos:
            self._it = self._reader.iter_range(self._pos)
            self._it_pos = self._pos
            self._buf = memoryview(b"")
        if not self._buf:
            self._buf = memoryview(next(self._it, b""))
        return self._buf

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        done = 0
        while done < len(out) and self._pos < self._reader.size:
            chunk = self._chunk()
            if not chunk:
                break
            n = min(len(out) - done, len(chunk))
            out[done : done + n] = chunk[:n]
            self._buf = chunk[n:]
            done += n
            self._pos += n
            self._it_pos = self._pos
        return done

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(self._reader.size - self._pos, 0)
        buf = bytearray(size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def readall(self) -> bytes:
        return self.read(-1)


# -- datasets and versions -------------------------------------------------------------------


def list_datasets(session: Session, pid: str) -> list[Dataset]:
    """The project's datasets (not those deleted)."""
    return list(
        session.execute(
            select(Dataset)
            .where(Dataset.project_id == pid, Dataset.deleted_at.is_(None))
            .order_by(Dataset.name)
        ).scalars()
    )


def get_dataset(session: Session, pid: str, name: str) -> Dataset:
    row = session.execute(
        select(Dataset).where(
            Dataset.project_id == pid, Dataset.name == name, Dataset.deleted_at.is_(None)
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no dataset {name!r}", code="dataset_not_found")
    return row


def versions_of(session: Session, dataset: Dataset) -> list[DatasetVersionRow]:
    return list(
        session.execute(
            select(DatasetVersionRow)
            .where(DatasetVersionRow.dataset_id == dataset.id)
            .order_by(DatasetVersionRow.version)
        ).scalars()
    )


def get_version(session: Session, dataset: Dataset, version: int) -> DatasetVersionRow:
    row = session.execute(
        select(DatasetVersionRow).where(
            DatasetVersionRow.dataset_id == dataset.id, DatasetVersionRow.version == version
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no version {version} of {dataset.name!r}", code="version_not_found")
    return row


def latest_versions(session: Session, pid: str) -> dict[int, DatasetVersionRow]:
    """The current (highest not deleted) version of every dataset of the project, by id."""
    newest = (
        select(DatasetVersionRow.dataset_id, func.max(DatasetVersionRow.version).label("v"))
        .where(DatasetVersionRow.project_id == pid, DatasetVersionRow.deleted_at.is_(None))
        .group_by(DatasetVersionRow.dataset_id)
        .subquery()
    )
    rows = session.execute(
        select(DatasetVersionRow).join(
            newest,
            (DatasetVersionRow.dataset_id == newest.c.dataset_id)
            & (DatasetVersionRow.version == newest.c.v),
        )
    ).scalars()
    return {row.dataset_id: row for row in rows}


def update_dataset(
    session: Session, trail: AuditTrail, dataset: Dataset, changes: Mapping[str, Any]
) -> Dataset:
    if "data_class" in changes and changes["data_class"] not in DATA_CLASSES:
        raise InvalidInput(f"unknown data class {changes['data_class']!r}", code="invalid_dataset")
    for name in ("description", "column_descriptions", "data_class", "personal_data"):
        if name in changes:
            setattr(dataset, name, changes[name])
    dataset.updated_at = dt.datetime.now(dt.UTC)
    session.flush()
    trail.record(
        "dataset.update",
        target=f"dataset:{dataset.name}",
        project_id=dataset.project_id,
        details={k: changes[k] for k in sorted(changes) if k != "column_descriptions"},
    )
    return dataset


def version_of(
    platform: Platform, session: Session, dataset: Dataset, row: DatasetVersionRow
) -> DatasetVersion:
    """The engine's view of a stored version (with its unwrapped data key)."""
    data_key = project_keys.data_key(session, platform.keyring, row.project_id, row.key_id)
    return DatasetVersion(
        name=dataset.name,
        version=row.version,
        location=BlobLocation(platform.store(row.store), row.storage_key, data_key),
        schema=pa.ipc.read_schema(pa.py_buffer(row.arrow_schema)),
        rows=row.rows,
        participant_column=row.participant_column,
        personal_data=dataset.personal_data,
        lineage=Lineage(
            source_name=row.source_path or "stream",
            source_sha256=row.source_sha256,
            source_format=row.source_format,
            rules=tuple(row.rules),
            created_by=row.created_by,
            created_at=row.created_at,
        ),
        stored=StoredObject(row.stored_bytes, row.plaintext_bytes, row.plaintext_sha256),
    )


# -- deletion --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deletion:
    dataset: str
    deleted_versions: tuple[int, ...]
    current_version: int | None  # None: the dataset is gone and its name free


class StorageUnavailable(HvelvError):
    status = 503
    code = "storage_unavailable"


def delete_version(
    platform: Platform,
    session: Session,
    trail: AuditTrail,
    pid: str,
    name: str,
    number: int,
    reason: str | None = None,
) -> Deletion:
    """Delete one version: its encrypted object, its data key, and (in the same transaction)
    mark its row deleted and audit ``dataset.delete``. Commits.

    Order: the row is marked, the data key row deleted and the audit event written (not yet
    committed), then the object is deleted from the blob store, then the transaction commits.
    If the object cannot be deleted, the transaction is rolled back (503, nothing changed, the
    version still works; the failure is audited). If the commit fails after the object is gone,
    the row still looks live but its object is missing: queries of it get 409 dataset_changed
    and repeating the DELETE completes it (deleting a missing object is not an error). Either
    way every in-process copy of the version's data is dropped (:meth:`DatasetRuntime.forget`).
    """
    dataset = get_dataset(session, pid, name)
    row = _lock_version(session, dataset, number)
    if row.deleted_at is not None:
        raise Conflict(
            f"version {number} of {name!r} was deleted {row.deleted_at:%Y-%m-%d %H:%M} UTC",
            code="version_deleted",
        )
    current = _delete_version(platform, session, trail, dataset, row, reason)
    return Deletion(dataset.name, (number,), current)


def delete_dataset(
    platform: Platform,
    session: Session,
    trail: AuditTrail,
    pid: str,
    name: str,
    reason: str | None = None,
) -> Deletion:
    """Delete every live version of a dataset, oldest first, each as :func:`delete_version`
    (its own transaction), so the current version stays queryable until it goes last. If a
    storage failure stops it half-way, the versions deleted so far stay deleted (503 names
    them) and repeating the DELETE completes it. The dataset is gone when its last version is:
    listings and queries no longer know it, and its name is free again."""
    dataset = get_dataset(session, pid, name)
    numbers = [v.version for v in versions_of(session, dataset) if v.deleted_at is None]
    done: list[int] = []
    current: int | None = None
    for number in numbers:
        row = _lock_version(session, dataset, number)
        if row.deleted_at is not None:  # deleted concurrently
            continue
        try:
            current = _delete_version(platform, session, trail, dataset, row, reason)
        except StorageUnavailable as exc:
            exc.details = {"deleted_versions": done, "remaining_versions": numbers[len(done) :]}
            raise
        done.append(number)
    return Deletion(name, tuple(done), current)


def _lock_version(session: Session, dataset: Dataset, number: int) -> DatasetVersionRow:
    row = session.execute(
        select(DatasetVersionRow)
        .where(DatasetVersionRow.dataset_id == dataset.id, DatasetVersionRow.version == number)
        .with_for_update()
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no version {number} of {dataset.name!r}", code="version_not_found")
    return row


def _delete_version(
    platform: Platform,
    session: Session,
    trail: AuditTrail,
    dataset: Dataset,
    row: DatasetVersionRow,
    reason: str | None,
) -> int | None:
    """Mark, delete the object, commit (see :func:`delete_version`); the new current version."""
    pid = dataset.project_id
    now = dt.datetime.now(dt.UTC)
    row.deleted_at = now
    row.deleted_by = trail.actor
    row.deletion_reason = reason
    session.execute(
        sa_delete(DataKey).where(DataKey.id == row.key_id, DataKey.project_id == pid)
    )  # without its key no copy of the object (backup, versioned bucket) can be read again
    session.flush()
    current = session.execute(
        select(func.max(DatasetVersionRow.version)).where(
            DatasetVersionRow.dataset_id == dataset.id, DatasetVersionRow.deleted_at.is_(None)
        )
    ).scalar()
    if current is None:
        dataset.deleted_at = now
        dataset.deleted_by = trail.actor
    target = f"dataset:{dataset.name}@{row.version}"
    details: dict[str, Any] = {
        "reason": reason,
        "rows": row.rows,
        "current_version": current,
        "dataset_deleted": current is None,
    }
    trail.record("dataset.delete", target=target, project_id=pid, details=details)
    session.flush()
    store, key = row.store, row.storage_key
    try:
        platform.store(store).delete(key)
    except Exception as exc:  # any store failure: nothing is marked, nothing is lost
        session.rollback()
        _audit_now(
            platform,
            trail,
            "dataset.delete",
            Outcome.FAILED,
            pid,
            target,
            {"reason": reason, "error": type(exc).__name__},
        )
        raise StorageUnavailable(
            f"the stored object of {target.removeprefix('dataset:')} could not be deleted "
            "(nothing was changed); try again"
        ) from None
    try:
        session.commit()
    finally:
        platform.datasets.forget(pid, key)
    return current


def _revive(dataset: Dataset, spec: IngestSpec, actor: str) -> None:
    """A new dataset under a freed name: nothing of the deleted one carries over (not even
    its "no personal data" mark) except the row, so version numbers keep counting."""
    now = dt.datetime.now(dt.UTC)
    dataset.description = spec.description or ""
    dataset.column_descriptions = dict(spec.column_descriptions or {})
    dataset.data_class = spec.data_class
    dataset.personal_data = spec.options.personal_data
    dataset.created_by = actor
    dataset.created_at = now
    dataset.updated_at = now
    dataset.deleted_at = None
    dataset.deleted_by = None


# -- ingest ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestSpec:
    name: str
    area: Area | None
    path: str
    options: IngestOptions
    description: str | None = None
    column_descriptions: Mapping[str, str] | None = None
    data_class: str = "questionnaire"
    source_area: str | None = None  # the lineage's area when not a file area ("upload")


def _type_name(t: pa.DataType) -> str:
    return str(t)


def create_version(
    platform: Platform,
    session: Session,
    trail: AuditTrail,
    pid: str,
    spec: IngestSpec,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[Dataset, DatasetVersionRow, IngestReport]:
    """Ingest a stored file (``spec.area``/``spec.path``) as a new version of ``spec.name``.

    ``session`` is a write session; it is committed before the ingest runs and again at the end.
    """
    _check_spec(spec)
    if spec.area is None:
        raise InvalidInput("name the area of the file", code="invalid_dataset")
    stored = catalog.get_live(session, pid, spec.area, spec.path)
    reader = FileReader(platform, session, pid, blobs_of(stored.blobs))
    source = cast(IO[bytes], FileStream(reader, spec.path.rsplit("/", 1)[-1]))
    return ingest_source(
        platform, session, trail, pid, spec, source, file_id=stored.id, progress=progress
    )


def _check_spec(spec: IngestSpec) -> None:
    if spec.name in RESERVED_NAMES:
        raise InvalidInput(f"{spec.name!r} is a reserved name", code="invalid_dataset")
    if spec.data_class not in DATA_CLASSES:
        raise InvalidInput(
            f"unknown data class {spec.data_class!r}; one of {', '.join(sorted(DATA_CLASSES))}",
            code="invalid_dataset",
        )


def ingest_source(
    platform: Platform,
    session: Session,
    trail: AuditTrail,
    pid: str,
    spec: IngestSpec,
    source: IO[bytes],
    *,
    file_id: str | None = None,
    allow_synthetic: bool | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Dataset, DatasetVersionRow, IngestReport]:
    """Ingest a seekable binary source (see :func:`create_version`). ``allow_synthetic``
    overrides the instance setting (the demo's synthetic cohort)."""
    _check_spec(spec)
    secrets = ProjectSecrets(session, platform.keyring, pid)
    enrolled = frozenset(
        session.execute(select(Participant.pseudonym).where(Participant.project_id == pid))
        .scalars()
        .all()
    )

    def pseudonymise(national_id: str) -> str | None:
        name = secrets.pseudonym(national_id)
        return name if name in enrolled else None

    if allow_synthetic is None:
        allow_synthetic = platform.settings.consent_allow_synthetic_ids
    runtime: DatasetRuntime = platform.datasets
    with runtime.ingest_lock(pid):
        registry = ParticipantKeys(runtime.keys(session, pid).pseudonyms())
        known = len(registry)
        key_id, raw_key = project_keys.new_data_key(session, platform.keyring, pid)
        storage_key = f"{pid}/datasets/{uuid.uuid4().hex}"
        store_name = platform.store_name
        location = BlobLocation(platform.store(store_name), storage_key, raw_key)
        session.commit()  # the data key; no write lock is held while the file is read
        options = spec.options
        now = dt.datetime.now(dt.UTC)
        try:
            report = ingest(
                source,
                name=spec.name,
                version=0,
                location=location,
                options=replace(options, allow_synthetic=allow_synthetic, today=now.date()),
                pseudonymise=pseudonymise,
                keys=registry,
                created_by=trail.actor,
                now=now,
                progress=progress,
            )
        except DatasetError as exc:
            _audit_now(
                platform,
                trail,
                "dataset.ingest",
                Outcome.FAILED,
                pid,
                f"dataset:{spec.name}",
                {"reason": exc.code, "file": file_id, **_counts(exc)},
            )
            raise
        version = report.version
        assert version is not None
        try:
            dataset, row = _record_version(
                session,
                trail,
                pid,
                spec,
                version,
                report,
                file_id,
                key_id,
                store_name,
                known,
                registry,
            )
        except BaseException:
            session.rollback()
            location.store.delete(storage_key)
            raise
    runtime.warm(pid, replace(version, version=row.version))
    return dataset, row, report


def _counts(exc: DatasetError) -> dict[str, Any]:
    details = exc.details if isinstance(exc.details, dict) else {}
    return {k: details[k] for k in ("rows_read", "rows_rejected", "reasons") if k in details}


def _record_version(
    session: Session,
    trail: AuditTrail,
    pid: str,
    spec: IngestSpec,
    version: DatasetVersion,
    report: IngestReport,
    file_id: str | None,
    key_id: int,
    store_name: str,
    known: int,
    registry: ParticipantKeys,
) -> tuple[Dataset, DatasetVersionRow]:
    in_table = session.execute(
        select(func.count())
        .select_from(ParticipantKeyRow)
        .where(ParticipantKeyRow.project_id == pid)
    ).scalar_one()
    if in_table != known:
        raise Conflict(
            "another ingest registered participants meanwhile; try again", code="ingest_conflict"
        )
    new = registry.pseudonyms()[known:]
    session.add_all(
        ParticipantKeyRow(project_id=pid, key=known + i, pseudonym=p) for i, p in enumerate(new)
    )
    dataset = session.execute(
        select(Dataset).where(Dataset.project_id == pid, Dataset.name == spec.name)
    ).scalar_one_or_none()
    if dataset is None:
        dataset = Dataset(
            project_id=pid,
            name=spec.name,
            description=spec.description or "",
            column_descriptions=dict(spec.column_descriptions or {}),
            data_class=spec.data_class,
            personal_data=spec.options.personal_data,
            created_by=trail.actor,
        )
        session.add(dataset)
    elif dataset.deleted_at is not None:  # the name was freed: a new dataset, numbers go on
        _revive(dataset, spec, trail.actor)
    else:
        if spec.description is not None:
            dataset.description = spec.description
        if spec.column_descriptions is not None:
            dataset.column_descriptions = dict(spec.column_descriptions)
        dataset.updated_at = dt.datetime.now(dt.UTC)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            "a concurrent change got there first; try again", code="ingest_conflict"
        ) from None
    number = 1 + (
        session.execute(
            select(func.max(DatasetVersionRow.version)).where(
                DatasetVersionRow.dataset_id == dataset.id
            )
        ).scalar()
        or 0
    )
    lineage = version.lineage
    row = DatasetVersionRow(
        dataset_id=dataset.id,
        project_id=pid,
        version=number,
        store=store_name,
        storage_key=version.location.key,
        key_id=key_id,
        stored_bytes=version.stored.stored_bytes,
        plaintext_bytes=version.stored.plaintext_bytes,
        plaintext_sha256=version.stored.plaintext_sha256,
        arrow_schema=version.schema.serialize().to_pybytes(),
        columns=[
            {"name": f.name, "type": _type_name(f.type)}
            for f in version.schema
            if not f.name.startswith("_hv")
        ],
        rows=version.rows,
        rows_rejected=report.rows_rejected,
        participant_column=version.participant_column,
        source_file_id=file_id,
        source_area=spec.area.value if spec.area else spec.source_area,
        source_path=spec.path or None,
        source_sha256=lineage.source_sha256,
        source_format=lineage.source_format,
        rules=list(lineage.rules),
        rejections=dict(report.reasons),
        created_by=trail.actor,
        created_at=lineage.created_at,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            "a concurrent ingest got there first; try again", code="ingest_conflict"
        ) from None
    trail.record(
        "dataset.ingest",
        target=f"dataset:{spec.name}@{number}",
        project_id=pid,
        details={
            "file": file_id,
            "source_sha256": lineage.source_sha256,
            "rules": list(lineage.rules),
            "rows": version.rows,
            "rows_rejected": report.rows_rejected,
            "reasons": dict(report.reasons),
            "new_participant_keys": len(new),
        },
    )
    session.commit()
    return dataset, row


# -- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuerySpec:
    sql: str
    purpose: str  # DUO code or id, e.g. HMB or DUO:0000006
    disease: str | None = None
    action: str = "analyse"
    requester_institution: str = ""


@dataclass(frozen=True)
class QueryOutcome:
    result: QueryResult
    log_ids: tuple[int, ...]
    permitted: int
    data_classes: tuple[str, ...] = field(default=())


def _approved(project: Project, purpose: Purpose) -> bool:
    for item in project.purposes:
        try:
            code = duo_code(str(item["code"]))
        except (ValueError, KeyError):
            continue
        if code == purpose.code and (item.get("disease") or None) == purpose.disease:
            return True
    return False


def _refused(platform: Platform, ctx: AuditContext, pid: str, reason: str, detail: str) -> None:
    _audit_now(
        platform,
        ctx,
        "dataset.query",
        Outcome.DENIED,
        pid,
        None,
        {"reason": reason, "refused": detail},
    )


class _Who(Protocol):
    @property
    def actor(self) -> str: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def client(self) -> str | None: ...


def _audit_now(
    platform: Platform,
    who: _Who,
    action: str,
    outcome: str,
    pid: str,
    target: str | None,
    details: dict[str, Any],
) -> None:
    """Audit an outcome in a transaction of its own (the caller's is rolled back or absent)."""
    platform.audit_now(
        AuditRecord(
            action=action,
            actor=who.actor,
            outcome=outcome,
            project_id=pid,
            target=target,
            request_id=who.request_id,
            client=who.client,
            details=details,
        )
    )


@dataclass(frozen=True)
class AuditContext:
    actor: str
    request_id: str | None = None
    client: str | None = None


def run_query(platform: Platform, who: AuditContext, pid: str, spec: QuerySpec) -> QueryOutcome:
    """Vet, check the purpose, snapshot and log consent, then run the query (module doc)."""
    sql_sha = hashlib.sha256(spec.sql.encode()).hexdigest()
    with platform.db.read() as session:
        project = session.get(Project, pid)
        if project is None:
            raise NotFound(f"no project {pid}", code="project_not_found")
        try:
            purpose = Purpose(duo_code(spec.purpose), spec.disease)
        except ValueError as exc:
            raise InvalidInput(str(exc), code="invalid_purpose") from None
        if not _approved(project, purpose):
            _refused(platform, who, pid, "purpose_not_approved", str(purpose.code))
            raise Forbidden(
                f"the project is not approved for the purpose {purpose.code}",
                code="purpose_not_approved",
                details={"approved": [p.get("code") for p in project.purposes]},
            )
        datasets = {d.name: d for d in list_datasets(session, pid)}
        try:
            vetted = vet_query(
                spec.sql, {name: f"{RESERVED_PREFIX}_{n}" for n, name in enumerate(datasets)}
            )
        except DatasetError as exc:
            _refused(platform, who, pid, exc.code, exc.message)
            raise
        by_lower = {name.lower(): d for name, d in datasets.items()}
        read = [by_lower[name] for name in sorted(vetted.datasets)]
        current = latest_versions(session, pid)
        versions: dict[str, DatasetVersion] = {}
        for dataset in read:
            row = current.get(dataset.id)
            if row is None:
                raise Conflict(f"dataset {dataset.name!r} has no version", code="dataset_empty")
            if row.participant_column is None and dataset.personal_data:
                raise DatasetNotQueryable(
                    f"dataset {dataset.name!r} has no participant column and is not marked as "
                    "holding no personal data"
                )
            versions[dataset.name] = version_of(platform, session, dataset, row)
        classes = tuple(sorted({d.data_class for d in read})) or ("questionnaire",)
        registry = platform.datasets.keys(session, pid)
        retire = _retired(session, platform.datasets.engine(pid).held(), pid, current)
    try:
        uses = [
            Use(
                project_id=pid,
                purpose=purpose,
                action=spec.action,
                data_class=data_class,
                requester_id=who.actor,
                requester_institution=spec.requester_institution,
            )
            for data_class in classes
        ]
    except ValueError as exc:
        raise InvalidInput(str(exc), code="invalid_use") from None
    now = dt.datetime.now(dt.UTC)
    refs = sorted(v.ref for v in versions.values())
    masks = []
    log_ids: list[int] = []
    position = 0
    with platform.db.write() as session:
        trail = AuditTrail(session, platform.ledger, who.actor, who.request_id, who.client)
        project = session.get(Project, pid)
        assert project is not None
        for use in uses:
            snap, entry = decisions.snapshot(
                session,
                trail,
                platform.consent_cache,
                project,
                use,
                now,
                age_of_majority=platform.settings.consent_age_of_majority,
                kind="query",
                extra={"sql_sha256": sql_sha, "datasets": refs},
            )
            masks.append(Permits.from_snapshot(registry, snap).mask)
            log_ids.append(entry.id)
            position = max(position, snap.ledger_position)
    size = max(len(m) for m in masks)
    mask = np.ones(size, dtype=np.bool_)
    for m in masks:
        mask &= Permits(m, position).padded(size)
    permits = Permits(mask, position)
    use_key = (
        purpose.code.value,
        purpose.disease,
        spec.action,
        classes,
        who.actor,
        spec.requester_institution,
    )
    result = platform.datasets.engine(pid).query(
        spec.sql,
        datasets=versions,
        use=use_key,
        permits=permits,
        limits=platform.datasets.limits,
        retire=retire,
    )
    return QueryOutcome(result, tuple(log_ids), permits.count, classes)


def _retired(
    session: Session, held: set[str], pid: str, current: Mapping[int, DatasetVersionRow]
) -> set[str]:
    """Of the versions this process holds data of, those no longer current (deleted or
    superseded, also by another process). Versions the table does not know yet (an ingest
    committing now) are kept."""
    if not held:
        return set()
    known = session.execute(
        select(DatasetVersionRow.storage_key).where(
            DatasetVersionRow.project_id == pid, DatasetVersionRow.storage_key.in_(sorted(held))
        )
    ).scalars()
    return set(known) - {row.storage_key for row in current.values()}
