"""Routes: /v1/projects/{pid}/datasets — ingest, datasets and versions, consent-enforced queries.

Data managers ingest and manage datasets; members (and owners and data managers) list them and
query; auditors and operators do neither. A query is logged in the consent decision log and the
audit trail before it runs (see :mod:`hvelv.datasets.service`).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from hvelv.datasets.models import Dataset, DatasetVersionRow
from hvelv.datasets.schemas import (
    ColumnOut,
    DatasetCreate,
    DatasetOut,
    DatasetPatch,
    DeletionOut,
    IngestOut,
    LineageOut,
    QueryIn,
    QueryOut,
    ReadOut,
    RejectionOut,
    UploadQuery,
    VersionOut,
)
from hvelv.errors import HvelvError, InvalidInput
from hvelv.files.paths import Area, clean_path
from hvelv.http.context import Ctx
from hvelv.http.routing import endpoint
from hvelv.security.actions import Action

if TYPE_CHECKING:
    import pyarrow as pa

    from hvelv.datasets.ingest import IngestReport
    from hvelv.datasets.service import IngestSpec

# hvelv.datasets.service (DuckDB, pyarrow, sqlglot: ~100 MB) is imported by the handlers on first
# use, so a server that serves no dataset request does not carry it

router = APIRouter(prefix="/v1/projects/{pid}/datasets", tags=["datasets"])

Pid = Annotated[str, Path(pattern=r"^p[0-9]{4,9}$", description="Project id, e.g. p1001")]
Name = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Dataset name")]
VersionNo = Annotated[int, Path(ge=1, le=2**31 - 1)]
Reason = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=1000,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="Why (kept with the version's row and in the audit trail)",
    ),
]

_NOT_FOUND = {404: "No such dataset, version or file"}
_CONFLICT = {409: "Conflicts with the current state"}
MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}


def version_out(dataset: Dataset, row: DatasetVersionRow) -> VersionOut:
    described = dataset.column_descriptions or {}
    return VersionOut(
        dataset=dataset.name,
        version=row.version,
        rows=row.rows,
        rows_rejected=row.rows_rejected,
        rejections=row.rejections or {},
        participant_column=row.participant_column,
        columns=[
            ColumnOut(name=c["name"], type=c["type"], description=described.get(c["name"]))
            for c in row.columns
        ],
        stored_bytes=row.stored_bytes,
        deleted_at=row.deleted_at,
        deleted_by=row.deleted_by,
        deletion_reason=row.deletion_reason,
        lineage=LineageOut(
            source_file_id=row.source_file_id,
            source_area=row.source_area,
            source_path=row.source_path,
            source_sha256=row.source_sha256,
            source_format=row.source_format,
            rules=row.rules,
            created_by=row.created_by,
            created_at=row.created_at,
        ),
    )


def dataset_out(
    session: Session,
    dataset: Dataset,
    current: DatasetVersionRow | None,
    *,
    versions: bool = False,
) -> DatasetOut:
    from hvelv.datasets import service

    queryable = current is not None and (
        current.participant_column is not None or not dataset.personal_data
    )
    return DatasetOut(
        name=dataset.name,
        description=dataset.description,
        column_descriptions=dataset.column_descriptions or {},
        data_class=dataset.data_class,
        personal_data=dataset.personal_data,
        queryable=queryable,
        created_at=dataset.created_at,
        updated_at=dataset.updated_at,
        current_version=current.version if current else None,
        rows=current.rows if current else None,
        versions=[version_out(dataset, v) for v in service.versions_of(session, dataset)]
        if versions
        else None,
    )


@endpoint(router, "GET", "", Action.DATASET_READ)
def list_datasets(pid: Pid, ctx: Ctx) -> list[DatasetOut]:
    """The project's datasets with their current version."""
    from hvelv.datasets import service

    current = service.latest_versions(ctx.session, ctx.pid)
    return [
        dataset_out(ctx.session, d, current.get(d.id))
        for d in service.list_datasets(ctx.session, ctx.pid)
    ]


@endpoint(
    router,
    "POST",
    "",
    Action.DATASET_MANAGE,
    status_code=201,
    errors={**_NOT_FOUND, **_CONFLICT},
)
def create_dataset_version(pid: Pid, body: DatasetCreate, ctx: Ctx) -> IngestOut:
    """Ingest a file of the import or files area as a new, immutable version of a dataset.

    National ids in ``participant_column`` are replaced by project pseudonyms; rows whose id is
    invalid or not enrolled are reported by row (422 ``ingest_rejected``, nothing stored) unless
    ``keep_valid``."""
    from hvelv.datasets import service
    from hvelv.datasets.ingest import IngestOptions

    spec = service.IngestSpec(
        name=body.name,
        area=Area(body.source.area),
        path=clean_path(body.source.path),
        description=body.description,
        column_descriptions=body.column_descriptions,
        data_class=body.data_class,
        options=IngestOptions(
            participant_column=body.participant_column,
            participant_output=body.participant_output,
            format=body.format,
            drop=frozenset(body.drop),
            generalise=dict(body.generalise),
            keep_valid=body.keep_valid,
            personal_data=body.personal_data,
            delimiter=body.delimiter,
            header=body.header,
            encoding=body.encoding,
            types=dict(body.types),
        ),
    )
    dataset, row, report = service.create_version(
        ctx.platform, ctx.session, ctx.trail(), ctx.pid, spec
    )
    return ingest_out(dataset, row, report)


def ingest_out(dataset: Dataset, row: DatasetVersionRow, report: IngestReport) -> IngestOut:
    summary = report.summary()
    return IngestOut(
        version=version_out(dataset, row),
        read=ReadOut(**report.read),
        rows_read=summary["rows_read"],
        rows_loaded=summary["rows_loaded"],
        rows_rejected=summary["rows_rejected"],
        reasons=summary["reasons"],
        rejections=[RejectionOut(**r) for r in summary["rejections"]],
        rejections_truncated=summary["rejections_truncated"],
    )


# -- streamed upload ---------------------------------------------------------------------------

_FORMATS_BY_TYPE: dict[str, Literal["csv", "parquet", "jsonl"]] = {
    "text/csv": "csv",
    "text/tab-separated-values": "csv",
    "text/plain": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/jsonlines": "jsonl",
    "application/x-jsonlines": "jsonl",
}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file: CSV, Parquet or JSON Lines (streamed, any size up to "
        "max_file_bytes and the project's quota)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        column, sep, rest = value.partition("=")
        if not sep or not column:
            raise InvalidInput(
                f"{option} takes COLUMN=VALUE, not {value[:80]!r}",
                code="invalid_input",
                details={"option": option},
            )
        out[column] = rest
    return out


def _upload_spec(name: str, q: UploadQuery, content_type: str | None) -> IngestSpec:
    from hvelv.datasets import service
    from hvelv.datasets.ingest import IngestOptions, check_options, format_by_name

    fmt = q.format or (format_by_name(q.filename) if q.filename else None)
    if fmt is None and content_type:
        fmt = _FORMATS_BY_TYPE.get(content_type.split(";")[0].strip().lower())
    if fmt is None:
        raise InvalidInput(
            "cannot tell the file's format: give format (csv, parquet, jsonl), a filename with "
            "its suffix or a Content-Type such as text/csv",
            code="ingest_invalid",
        )
    options = IngestOptions(
        participant_column=q.participant_column,
        participant_output=q.participant_output,
        format=fmt,
        drop=frozenset(q.drop),
        generalise=_pairs(q.generalise, "generalise"),
        keep_valid=q.keep_valid,
        personal_data=q.personal_data,
        delimiter=q.delimiter,
        header=q.header,
        encoding=q.encoding,
        types=_pairs(q.types, "types"),
    )
    check_options(options)  # refused before a byte of the body is read
    return service.IngestSpec(
        name=name,
        area=None,
        path=clean_path(q.filename) if q.filename else "",
        options=options,
        description=q.description,
        column_descriptions=_pairs(q.column_descriptions, "column_descriptions")
        if q.column_descriptions
        else None,
        data_class=q.data_class,
        source_area="upload",
    )


@endpoint(
    router,
    "POST",
    "/{name}/upload",
    Action.DATASET_MANAGE,
    status_code=201,
    errors={**_CONFLICT, 413: "Larger than max_file_bytes or the project's quota allows"},
    openapi_extra=_UPLOAD_BODY,
)
async def upload_dataset_version(
    pid: Pid, name: Name, query: Annotated[UploadQuery, Query()], request: Request, ctx: Ctx
) -> IngestOut:
    """Ingest the request body as a new, immutable version of a dataset (streamed).

    The options are query parameters (those of ``POST .../datasets`` without ``name`` and
    ``source``; mappings as repeated ``COLUMN=VALUE``). The body is encrypted as it arrives
    into a temporary object of the project's blob store, ingested from there and deleted;
    the lineage's area is ``upload``."""
    from hvelv.datasets import upload

    spec = _upload_spec(name, query, request.headers.get("content-type"))
    length = request.headers.get("content-length")
    declared = int(length) if length is not None and length.isdigit() else None
    platform = ctx.platform

    def start() -> tuple[upload.TemporaryObject, int, HvelvError]:
        project = ctx.project
        assert project is not None
        limit, too_large = upload.room_for(platform, ctx.session, project)
        ctx.commit()  # no transaction is held while the body arrives
        if declared is not None and declared > limit:
            raise too_large
        expected = declared if declared is not None else min(limit, upload.UNKNOWN_LENGTH)
        obj = upload.TemporaryObject(
            platform.store(), ctx.pid, expected, segment_size=platform.settings.segment_size
        )
        return obj, limit, too_large

    obj, limit, too_large = await run_in_threadpool(start)
    try:
        await upload.receive(obj, request.stream(), limit, too_large)
        dataset, row, report = await run_in_threadpool(
            upload.ingest_upload, platform, ctx.session, ctx.trail(), ctx.pid, spec, obj
        )
    finally:
        await run_in_threadpool(obj.discard)
    return ingest_out(dataset, row, report)


@endpoint(router, "GET", "/{name}", Action.DATASET_READ, errors=_NOT_FOUND)
def read_dataset(pid: Pid, name: Name, ctx: Ctx) -> DatasetOut:
    """A dataset with all its versions and their lineage."""
    from hvelv.datasets import service

    dataset = service.get_dataset(ctx.session, ctx.pid, name)
    current = service.latest_versions(ctx.session, ctx.pid).get(dataset.id)
    return dataset_out(ctx.session, dataset, current, versions=True)


@endpoint(router, "PATCH", "/{name}", Action.DATASET_MANAGE, errors=_NOT_FOUND)
def update_dataset(pid: Pid, name: Name, body: DatasetPatch, ctx: Ctx) -> DatasetOut:
    """Description, column descriptions, data class and the "no personal data" mark."""
    from hvelv.datasets import service

    dataset = service.get_dataset(ctx.session, ctx.pid, name)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    service.update_dataset(ctx.session, ctx.trail(), dataset, changes)
    ctx.commit()
    current = service.latest_versions(ctx.session, ctx.pid).get(dataset.id)
    return dataset_out(ctx.session, dataset, current)


@endpoint(router, "GET", "/{name}/versions/{version}", Action.DATASET_READ, errors=_NOT_FOUND)
def read_version(pid: Pid, name: Name, version: VersionNo, ctx: Ctx) -> VersionOut:
    """One immutable version: schema, row count, lineage."""
    from hvelv.datasets import service

    dataset = service.get_dataset(ctx.session, ctx.pid, name)
    return version_out(dataset, service.get_version(ctx.session, dataset, version))


_DELETE_ERRORS = {
    **_NOT_FOUND,
    409: "The version was already deleted",
    503: "The stored object could not be deleted; nothing was changed, try again",
}


@endpoint(
    router, "DELETE", "/{name}/versions/{version}", Action.DATASET_MANAGE, errors=_DELETE_ERRORS
)
def delete_version(
    pid: Pid, name: Name, version: VersionNo, ctx: Ctx, reason: Reason = None
) -> DeletionOut:
    """Delete one version: its encrypted data is destroyed, its row stays as lineage (with
    when, who and why). The dataset's current version becomes the newest one left; deleting
    the last one deletes the dataset."""
    from hvelv.datasets import service

    done = service.delete_version(
        ctx.platform, ctx.session, ctx.trail(), ctx.pid, name, version, reason
    )
    return DeletionOut(
        dataset=done.dataset,
        deleted_versions=list(done.deleted_versions),
        current_version=done.current_version,
    )


@endpoint(router, "DELETE", "/{name}", Action.DATASET_MANAGE, errors=_DELETE_ERRORS)
def delete_dataset(pid: Pid, name: Name, ctx: Ctx, reason: Reason = None) -> DeletionOut:
    """Delete a dataset: every version's data is destroyed (oldest first), the rows stay as
    lineage; the dataset leaves listings and queries and its name is free again."""
    from hvelv.datasets import service

    done = service.delete_dataset(ctx.platform, ctx.session, ctx.trail(), ctx.pid, name, reason)
    return DeletionOut(
        dataset=done.dataset,
        deleted_versions=list(done.deleted_versions),
        current_version=done.current_version,
    )


def _columns(schema: pa.Schema) -> list[ColumnOut]:
    return [ColumnOut(name=f.name, type=str(f.type)) for f in schema]


def _stream(table: pa.Table, fmt: str) -> bytes:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    if fmt == "csv":
        pacsv.write_csv(table, sink)
    elif fmt == "parquet":
        pq.write_table(table, sink, compression="zstd")
    else:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return sink.getvalue()


@endpoint(
    router,
    "POST",
    "/query",
    Action.DATASET_QUERY,
    errors={
        403: "Not allowed, or the purpose is not one of the project's approved purposes",
        409: "A dataset read is not queryable",
        422: "Invalid input, or a row, byte or time limit was exceeded",
    },
    response_model=QueryOut,
)
def query(pid: Pid, body: QueryIn, ctx: Ctx) -> Any:
    """Run one SELECT (DuckDB dialect) over the project's datasets for a declared purpose.

    Only rows of participants whose current consent covers the use (purpose, action, the
    datasets' data class, you) are visible. ``format`` json gives one page of rows; csv, parquet
    and arrow give the whole result (``text/csv``, ``application/vnd.apache.parquet``,
    ``application/vnd.apache.arrow.stream``) with the ledger position in headers. The use is
    logged in the consent decision log with the ledger position, and audited."""
    from hvelv.datasets import service

    page_max = ctx.platform.datasets.limits.page_rows
    limit = body.limit if body.limit is not None else min(1000, page_max)
    if limit > page_max:
        raise InvalidInput(
            f"limit must be at most {page_max} rows per page; csv, parquet or arrow give the "
            "whole result",
            details={"maximum": page_max},
        )
    outcome = service.run_query(
        ctx.platform,
        service.AuditContext(ctx.actor, ctx.request_id, ctx.client),
        ctx.pid,
        service.QuerySpec(
            sql=body.sql,
            purpose=body.purpose,
            disease=body.disease,
            action=body.action,
            requester_institution=body.requester_institution,
        ),
    )
    ctx.close()  # nothing more to read; do not hold a connection while serialising
    result = outcome.result
    table = result.table
    if body.format != "json":
        headers = {
            "X-Hvelv-Ledger-Position": str(result.ledger_position),
            "X-Hvelv-Rows": str(table.num_rows),
            "X-Hvelv-Datasets": ",".join(result.datasets),
            "X-Hvelv-Log-Ids": ",".join(str(i) for i in outcome.log_ids),
        }
        return Response(_stream(table, body.format), media_type=MEDIA[body.format], headers=headers)
    start = (body.page - 1) * limit
    page = table.slice(start, limit) if start < table.num_rows else table.slice(0, 0)
    rows = [list(r) for r in zip(*(c.to_pylist() for c in page.columns), strict=True)]
    more = start + limit < table.num_rows
    return QueryOut(
        columns=_columns(table.schema),
        rows=jsonable_encoder(rows),
        total_rows=table.num_rows,
        page=body.page,
        limit=limit,
        next_page=body.page + 1 if more else None,
        datasets=list(result.datasets),
        ledger_position=result.ledger_position,
        permitted_participants=outcome.permitted,
        log_ids=list(outcome.log_ids),
        elapsed_ms=round(result.elapsed_s * 1000, 1),
    )
