"""Routes: /v1/projects/{pid}/files/{area}/... (tus uploads, listing, download, trash) and
/v1/projects/{pid}/upload-links.

Every area has its own routes so that each names its own action: anyone working in the
project may upload to ``import`` and ``files``, only data managers write ``export``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import Send

from hvelv.audit.ledger import AuditRecord, Outcome
from hvelv.audit.trail import AuditTrail
from hvelv.crypto.segments import IntegrityError
from hvelv.errors import HvelvError
from hvelv.files import catalog, links, tus, uploads
from hvelv.files.ahead import stream_ahead
from hvelv.files.blobs import FileReader, blobs_of
from hvelv.files.models import StoredFile, Upload, UploadLink
from hvelv.files.paths import Area, clean_path, clean_prefix
from hvelv.files.ranges import (
    ByteRange,
    Unsatisfiable,
    etag,
    none_match,
    parse_range,
    range_applies,
)
from hvelv.files.schemas import (
    FileOut,
    FilePage,
    LinkCreate,
    LinkCreated,
    LinkOut,
    MoveIn,
    MoveOut,
    RestoreIn,
    TrashedFile,
    TrashPage,
)
from hvelv.http.context import Ctx, RequestContext
from hvelv.http.routing import endpoint
from hvelv.security.actions import Action
from hvelv.security.authorize import PrincipalKind

log = logging.getLogger("hvelv.files")
router = APIRouter(prefix="/v1/projects/{pid}", tags=["files"])

Pid = Annotated[str, Path(pattern=r"^p[0-9]{4,9}$", description="Project id, e.g. p1001")]
UploadId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="Upload id")]
FileId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="File id")]
LinkId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$", description="Upload link id")]
FilePath = Annotated[str, Path(description="File path inside the area", max_length=4096)]

AREA_ACTIONS = {
    Area.IMPORT: (Action.FILES_IMPORT, Action.FILES_MANAGE),
    Area.FILES: (Action.FILES_WRITE, Action.FILES_MANAGE),
    Area.EXPORT: (Action.FILES_EXPORT, Action.FILES_MANAGE_EXPORT),
}
TUS_ERRORS = {
    409: "Upload-Offset does not match",
    410: "Upload expired",
    412: "Unsupported tus version",
    413: "Too large or over quota",
    415: "Wrong Content-Type",
    423: "Another request is writing this upload",
    460: "Checksum mismatch",
}
FEED_BYTES = 1024 * 1024  # plaintext handed to the encrypting thread at a time
#: ... or fewer bytes in this many pieces: each piece of a body trickled in costs ~40 bytes
FEED_PIECES = 256


def file_out(stored: StoredFile) -> FileOut:
    return FileOut(
        id=stored.id,
        path=stored.path,
        size=stored.size,
        sha256=stored.sha256,
        content_type=stored.content_type,
        uploader=stored.uploader,
        created_at=stored.created_at,
        modified_at=stored.modified_at,
    )


def _trashed(stored: StoredFile) -> TrashedFile:
    assert stored.deleted_at is not None
    return TrashedFile(
        **file_out(stored).model_dump(),
        deleted_at=stored.deleted_at,
        deleted_by=stored.deleted_by,
        purge_after=stored.purge_after,
    )


def _link_out(link: UploadLink) -> LinkOut:
    return LinkOut(
        id=link.id,
        label=link.label,
        created_by=link.created_by,
        created_at=link.created_at,
        expires_at=link.expires_at,
        max_uses=link.max_uses,
        uses=link.uses,
        max_bytes=link.max_bytes,
        bytes_reserved=link.bytes_reserved,
        revoked=link.revoked_at is not None,
    )


# -- tus helpers ------------------------------------------------------------------------------


def _upload_url(pid: str, area: Area, upload_id: str) -> str:
    return f"/v1/projects/{pid}/files/{area.value}/uploads/{upload_id}"


def _tus_headers(upload: Upload | None = None, offset: int | None = None) -> dict[str, str]:
    headers = {"Tus-Resumable": tus.VERSION}
    if upload is not None:
        if offset is not None:
            headers["Upload-Offset"] = str(offset)
        if upload.status == "active":
            headers["Upload-Expires"] = tus.http_date(upload.expires_at)
    return headers


def _trail_for(ctx: RequestContext) -> Callable[[Session], AuditTrail]:
    def make(session: Session) -> AuditTrail:
        return AuditTrail(session, ctx.platform.ledger, ctx.actor, ctx.request_id, ctx.client)

    return make


def _link_id(ctx: RequestContext) -> str | None:
    principal = ctx.principal
    if principal is not None and principal.kind is PrincipalKind.UPLOAD_LINK:
        return str(principal.id)
    return None


async def _receive(
    ctx: RequestContext, request: Request, lease: uploads.Lease, checksum: tus.Checksum | None
) -> int:
    """Stream the request body into the upload; return the new durable offset."""
    writer = uploads.PartWriter(ctx.platform, lease)
    writer.defer = checksum is not None
    length = lease.upload.length  # None: deferred, and the body may bring what is reserved
    remaining = (length if length is not None else lease.upload.reserved) - lease.upload.offset
    hasher = checksum.hasher() if checksum else None
    limit = ctx.platform.settings.upload_part_bytes * 4
    pending: list[bytes] = []  # handed on as they came: joining them cost the event loop a copy
    pending_bytes = 0
    job: asyncio.Future[None] | None = None
    taken = 0
    too_long = disconnected = False
    try:
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                if taken + len(chunk) > remaining:
                    chunk = chunk[: remaining - taken]
                    too_long = True
                taken += len(chunk)
                if hasher is not None:
                    if taken > limit:
                        raise tus.TusError(
                            413,
                            "checksum_chunk_too_large",
                            f"a PATCH with Upload-Checksum may carry at most {limit} bytes; "
                            "send smaller chunks",
                        )
                    hasher.update(chunk)
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes >= FEED_BYTES or len(pending) >= FEED_PIECES:
                    if job is not None:
                        await job
                    block, pending, pending_bytes = pending, [], 0
                    job = asyncio.ensure_future(run_in_threadpool(writer.feed, block))
                if too_long:
                    break
        except ClientDisconnect:
            disconnected = True
        if job is not None:
            await job
        if pending:
            await run_in_threadpool(writer.feed, pending)
        if checksum is not None and hasher is not None:
            if disconnected or hasher.digest() != checksum.digest:
                await run_in_threadpool(writer.discard)
                if disconnected:
                    return lease.upload.offset
                raise tus.TusError(
                    460,
                    "checksum_mismatch",
                    f"the {checksum.algorithm} checksum of the request body does not match "
                    "Upload-Checksum; nothing of this request was stored",
                    headers={"Upload-Offset": str(lease.upload.offset)},
                )
            writer.defer = False
        if length is not None and writer.writer.plaintext_length == length:
            await run_in_threadpool(writer.finish, _trail_for(ctx))
            offset = length
        else:
            offset = await run_in_threadpool(writer.flush)
    except BaseException:
        await run_in_threadpool(writer.abandon)
        raise
    if too_long:
        if lease.over_limit is not None:  # deferred length: a limit, not Upload-Length
            over = lease.over_limit
            raise tus.TusError(
                over.status,
                over.code,
                f"{over.message}; the excess was refused",
                details=over.details,
                headers={"Upload-Offset": str(offset)},
            )
        raise tus.TusError(
            413,
            "beyond_upload_length",
            "the request carries more bytes than Upload-Length; the excess was refused",
            headers={"Upload-Offset": str(offset)},
        )
    return offset


def _content_length(headers: Headers) -> int | None:
    """The body's announced size (None for a chunked body)."""
    value = headers.get("content-length")
    if value is None or headers.get("transfer-encoding"):
        return None
    return tus.parse_int(value, "Content-Length")


def _find(ctx: RequestContext, area: Area, upload_id: str) -> Upload:
    return uploads.find(ctx.session, ctx.pid, area, upload_id, ctx.actor)


def _concat_header(upload: Upload, pid: str, area: Area) -> str | None:
    if upload.concat == "partial":
        return "partial"
    if upload.concat == "final":
        return "final;" + " ".join(_upload_url(pid, area, p) for p in upload.partials)
    return None


# -- per-area routes --------------------------------------------------------------------------


def _register(area: Area) -> None:
    upload_action, manage_action = AREA_ACTIONS[area]
    base = f"/files/{area.value}"
    label = f"the {area.value} area"

    @endpoint(router, "OPTIONS", base + "/uploads", upload_action, status_code=204)
    def tus_options(pid: Pid, ctx: Ctx) -> Response:
        """tus discovery: version, extensions, maximum size and checksum algorithms."""
        return Response(
            status_code=204,
            headers={
                "Tus-Resumable": tus.VERSION,
                "Tus-Version": tus.VERSION,
                "Tus-Extension": tus.EXTENSIONS,
                "Tus-Max-Size": str(ctx.platform.settings.max_file_bytes),
                "Tus-Checksum-Algorithm": ",".join(tus.CHECKSUM_ALGORITHMS),
            },
        )

    @endpoint(
        router,
        "POST",
        base + "/uploads",
        upload_action,
        status_code=201,
        errors=TUS_ERRORS,
        summary=f"Start a tus upload into {label}",
    )
    async def tus_create(pid: Pid, request: Request, ctx: Ctx) -> Response:
        """tus creation (+ creation-with-upload, + concatenation). `Upload-Metadata` names
        the file (`filename`, or `relativePath` for folder uploads) and `filetype`."""
        headers = request.headers
        tus.check_version(headers.get("tus-resumable"))
        concat = tus.parse_concat(headers.get("upload-concat"))
        metadata_header = headers.get("upload-metadata", "")
        metadata = tus.parse_metadata(metadata_header)
        body_follows = int(headers.get("content-length") or 0) > 0 or bool(
            headers.get("transfer-encoding")
        )
        deferred = tus.parse_defer_length(headers.get("upload-defer-length"))
        if deferred and headers.get("upload-length") is not None:
            raise tus.TusError(
                400,
                "invalid_header",
                "send either Upload-Length or Upload-Defer-Length, not both",
            )
        if deferred and concat is not None and concat.kind == "final":
            raise tus.TusError(400, "invalid_concat", "a final upload takes neither length header")
        new = uploads.NewUpload(
            area=area,
            length=0,
            metadata=metadata,
            metadata_header=metadata_header,
            creator=ctx.actor,
            link_id=_link_id(ctx),
            partial=concat is not None and concat.kind == "partial",
        )

        if concat is not None and concat.kind == "final":
            if body_follows:
                raise tus.TusError(400, "invalid_concat", "a final upload carries no body")

            project = ctx.project
            assert project is not None

            def check() -> uploads.Concatenation:
                parts = uploads.concatenation_reader(
                    ctx.platform, ctx.session, project, new, concat.partial_ids
                )
                ctx.commit()  # no write lock is held while the parts are hashed
                return parts

            def finalise(sha: str) -> Upload:
                final = uploads.concatenate(
                    ctx.platform, ctx.session, ctx.trail(), project, new, concat.partial_ids, sha
                )
                ctx.commit()
                return final

            parts = await run_in_threadpool(check)
            sha = await run_in_threadpool(parts.sha256)
            final = await run_in_threadpool(finalise, sha)
            return Response(
                status_code=201,
                headers={
                    **_tus_headers(final),
                    "Location": _upload_url(pid, area, final.id),
                    "Upload-Offset": str(final.length),
                },
            )
        if deferred:
            new.length = None
        else:
            new.length = tus.parse_int(headers.get("upload-length"), "Upload-Length")
        if body_follows and tus.bad_content_type(headers.get("content-type")):
            raise tus.bad_content_type(headers.get("content-type")) or AssertionError()

        def start() -> tuple[Upload, uploads.Lease | None]:
            project = ctx.project
            assert project is not None
            upload = uploads.create(ctx.platform, ctx.session, ctx.trail(), project, new)
            lease = None
            if body_follows and upload.status == "active":
                lease = uploads.acquire(
                    ctx.platform, ctx.session, upload, 0, _content_length(headers)
                )
            ctx.commit()
            return upload, lease

        upload, lease = await run_in_threadpool(start)
        offset = upload.offset
        if lease is not None:
            offset = await _receive(
                ctx, request, lease, tus.parse_checksum(headers.get("upload-checksum"))
            )
        out = _tus_headers(upload, offset)
        out["Location"] = _upload_url(pid, area, upload.id)
        return Response(status_code=201, headers=out)

    @endpoint(router, "HEAD", base + "/uploads/{upload_id}", upload_action, errors=TUS_ERRORS)
    def tus_head(pid: Pid, upload_id: UploadId, request: Request, ctx: Ctx) -> Response:
        """tus: the upload's durably stored offset and its length."""
        tus.check_version(request.headers.get("tus-resumable"))
        upload = _find(ctx, area, upload_id)
        offset = uploads.current_offset(ctx.platform, ctx.session, upload)
        ctx.commit()
        headers = _tus_headers(upload, offset)
        if upload.length is None:
            headers["Upload-Defer-Length"] = "1"
        else:
            headers["Upload-Length"] = str(upload.length)
        if upload.metadata_header:
            headers["Upload-Metadata"] = upload.metadata_header
        concat = _concat_header(upload, pid, area)
        if concat:
            headers["Upload-Concat"] = concat
        return Response(status_code=200, headers=headers)

    @endpoint(
        router,
        "PATCH",
        base + "/uploads/{upload_id}",
        upload_action,
        status_code=204,
        errors=TUS_ERRORS,
    )
    async def tus_patch(pid: Pid, upload_id: UploadId, request: Request, ctx: Ctx) -> Response:
        """tus: append bytes at `Upload-Offset` (optionally with `Upload-Checksum`); an
        upload created with `Upload-Defer-Length: 1` gets its `Upload-Length` on a PATCH."""
        headers = request.headers
        tus.check_version(headers.get("tus-resumable"))
        bad = tus.bad_content_type(headers.get("content-type"))
        if bad:
            raise bad
        offset = tus.parse_int(headers.get("upload-offset"), "Upload-Offset")
        checksum = tus.parse_checksum(headers.get("upload-checksum"))
        declared = headers.get("upload-length")
        length = None if declared is None else tus.parse_int(declared, "Upload-Length")

        def lease() -> tuple[Upload, uploads.Lease | None]:
            upload = _find(ctx, area, upload_id)
            got = uploads.acquire(
                ctx.platform, ctx.session, upload, offset, _content_length(headers), length
            )
            ctx.commit()
            return upload, got

        upload, got = await run_in_threadpool(lease)
        if got is None:
            new_offset = uploads.known_length(upload)
        else:
            new_offset = await _receive(ctx, request, got, checksum)
        out = _tus_headers(upload if got is None else got.upload, new_offset)
        return Response(status_code=204, headers=out)

    @endpoint(
        router,
        "DELETE",
        base + "/uploads/{upload_id}",
        upload_action,
        status_code=204,
        errors=TUS_ERRORS,
    )
    def tus_terminate(pid: Pid, upload_id: UploadId, request: Request, ctx: Ctx) -> Response:
        """tus termination: discard an unfinished upload and its stored bytes."""
        tus.check_version(request.headers.get("tus-resumable"))
        upload = _find(ctx, area, upload_id)
        uploads.terminate(ctx.platform, ctx.session, ctx.trail(), upload)
        ctx.commit()
        return Response(status_code=204, headers=_tus_headers())

    @endpoint(router, "GET", base, Action.FILES_READ, summary=f"List {label}")
    def list_files(
        pid: Pid,
        ctx: Ctx,
        prefix: Annotated[str, Query(max_length=1024)] = "",
        sort: catalog.Sort = "path",
        order: catalog.Order = "asc",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=100)] = None,
    ) -> FilePage:
        """Files with size, SHA-256, uploader and times; filter by path prefix, sort, page."""
        page = catalog.list_files(
            ctx.session,
            ctx.pid,
            area,
            prefix=clean_prefix(prefix),
            sort=sort,
            order=order,
            limit=limit,
            cursor=cursor,
        )
        return FilePage(items=[file_out(f) for f in page.items], next_cursor=page.next_cursor)

    def _download(path: str, request: Request, ctx: RequestContext, *, body: bool) -> Response:
        stored = catalog.get_live(ctx.session, ctx.pid, area, clean_path(path))
        tag = etag(stored.sha256)
        headers = {
            "ETag": tag,
            "Last-Modified": tus.http_date(stored.modified_at),
            "Accept-Ranges": "bytes",
            "Cache-Control": "private, no-store",
            "Content-Disposition": "attachment; filename*=UTF-8''"
            + quote(stored.path.rsplit("/", 1)[-1]),
            "X-Content-SHA256": stored.sha256,
        }
        if none_match(request.headers.get("if-none-match"), tag):
            return Response(status_code=304, headers=headers)
        wanted: ByteRange | None = None
        if range_applies(request.headers.get("if-range"), tag, stored.modified_at):
            try:
                wanted = parse_range(request.headers.get("range"), stored.size)
            except Unsatisfiable:
                raise HvelvError(
                    "the requested range is outside the file",
                    code="range_not_satisfiable",
                    status=416,
                    headers={"Content-Range": f"bytes */{stored.size}"},
                ) from None
        start, end = (wanted.start, wanted.end) if wanted else (0, stored.size)
        status = 206 if wanted else 200
        if wanted:
            headers["Content-Range"] = wanted.content_range(stored.size)
        headers["Content-Length"] = str(end - start)
        if not body:
            return Response(status_code=status, headers=headers, media_type=stored.content_type)
        reader = FileReader(ctx.platform, ctx.session, ctx.pid, blobs_of(stored.blobs))
        record = AuditRecord(
            action="files.download",
            actor=ctx.actor,
            project_id=ctx.pid,
            target=f"{area.value}:{stored.path}",
            request_id=ctx.request_id,
            client=ctx.client,
            details={
                "file": stored.id,
                "sha256": stored.sha256,
                "range": [start, end] if wanted else None,
            },
        )
        try:
            first, rest = reader.first_chunk(start, end)
        except IntegrityError as exc:
            ctx.platform.audit_now(replace(record, outcome=Outcome.FAILED))
            raise HvelvError(
                f"the stored file failed its integrity check ({exc}); it was not sent",
                code="integrity_error",
                status=500,
            ) from None
        ctx.platform.audit_now(record)
        more = len(first) < end - start
        return _Download(
            _guarded(
                first, stream_ahead(rest, STREAM_DEPTH) if more else _no_more(rest), stored.path
            ),
            status_code=status,
            headers=headers,
            media_type=stored.content_type,
        )

    @endpoint(
        router,
        "GET",
        base + "/content/{path:path}",
        Action.FILES_READ,
        errors={416: "Range not satisfiable"},
        response_class=StreamingResponse,
        summary=f"Download a file from {label}",
    )
    def download(pid: Pid, path: FilePath, request: Request, ctx: Ctx) -> Response:
        """Stream the decrypted file; `Range`, `If-Range` and `If-None-Match` per RFC 9110.
        The ETag is the quoted SHA-256 of the content."""
        return _download(path, request, ctx, body=True)

    @endpoint(router, "HEAD", base + "/content/{path:path}", Action.FILES_READ)
    def download_head(pid: Pid, path: FilePath, request: Request, ctx: Ctx) -> Response:
        """The download's headers (size, ETag, SHA-256) without the body."""
        return _download(path, request, ctx, body=False)

    @endpoint(router, "DELETE", base + "/content/{path:path}", manage_action, status_code=200)
    def delete_file(pid: Pid, path: FilePath, ctx: Ctx) -> TrashedFile:
        """Move a file to the trash (restorable for the retention period)."""
        stored = catalog.delete(
            ctx.session,
            ctx.trail(),
            ctx.pid,
            area,
            clean_path(path),
            ctx.platform.settings.trash_retention_days,
        )
        ctx.commit()
        return _trashed(stored)

    @endpoint(router, "POST", base + "/move", manage_action, errors={409: "Target exists"})
    def move(pid: Pid, body: MoveIn, ctx: Ctx) -> MoveOut:
        """Rename or move a file or a whole folder within the area."""
        moved = catalog.move(
            ctx.session,
            ctx.trail(),
            ctx.pid,
            area,
            clean_path(body.source),
            clean_path(body.target),
        )
        ctx.commit()
        return MoveOut(moved=[file_out(f) for f in moved])

    @endpoint(router, "GET", base + "/trash", Action.FILES_READ)
    def list_trash(
        pid: Pid,
        ctx: Ctx,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=100)] = None,
    ) -> TrashPage:
        """Deleted and replaced files of the area, newest first, until they are purged."""
        page = catalog.list_trash(ctx.session, ctx.pid, area, limit=limit, cursor=cursor)
        return TrashPage(items=[_trashed(f) for f in page.items], next_cursor=page.next_cursor)

    @endpoint(
        router,
        "POST",
        base + "/trash/{file_id}/restore",
        manage_action,
        errors={409: "Path occupied"},
    )
    def restore(pid: Pid, file_id: FileId, ctx: Ctx, body: RestoreIn | None = None) -> FileOut:
        """Bring a file back from the trash, at its old path or at `to`."""
        to = clean_path(body.to) if body and body.to else None
        stored = catalog.restore(ctx.session, ctx.trail(), ctx.pid, area, file_id, to)
        ctx.commit()
        return file_out(stored)


# Segments being decrypted or ready, besides the one being sent: the next ones are read and
# decrypted (in a thread, without the GIL) while the event loop sends this one. 2 measured
# 20 % faster than 1 and as fast as 3 (docs/performance.md); a download then holds three
# decrypted segments at most (12 MiB at the default segment size).
STREAM_DEPTH = 2


class _Download(StreamingResponse):
    """A streamed download that closes its body however the streaming ends (a response
    cancelled while it waits to send, too), so its read-ahead stops at once rather than
    when the generator is collected."""

    def __init__(self, body: AsyncGenerator[bytes, None], **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self._body = body

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._body.aclose()


async def _no_more(rest: Iterator[bytes]) -> AsyncGenerator[bytes, None]:
    """The rest of a download whose first piece was all of it: no thread to start (the
    reader only closes its file here)."""
    for chunk in rest:
        yield chunk


async def _guarded(
    first: bytes, rest: AsyncGenerator[bytes, None], path: str
) -> AsyncGenerator[bytes, None]:
    """Yield the file; a damaged segment later on aborts the stream (never wrong bytes)."""
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    except IntegrityError as exc:
        log.error("integrity error while streaming", extra={"path": path, "error": str(exc)})
        raise
    finally:
        await rest.aclose()


for _area in Area:
    _register(_area)


# -- upload links -----------------------------------------------------------------------------


@endpoint(router, "POST", "/upload-links", Action.UPLOAD_LINK_MANAGE, status_code=201)
def create_link(pid: Pid, body: LinkCreate, ctx: Ctx) -> LinkCreated:
    """A time-limited link for delivering files into `import` without an account."""
    made = links.create(
        ctx.session,
        ctx.trail(),
        ctx.pid,
        label=body.label,
        expires_in_hours=body.expires_in_hours,
        max_uses=body.max_uses,
        max_bytes=body.max_bytes,
    )
    ctx.commit()
    base = ctx.platform.settings.base_url.rstrip("/")
    return LinkCreated(
        **_link_out(made.link).model_dump(),
        token=made.token,
        upload_url=f"{base}/v1/projects/{pid}/files/import/uploads",
    )


@endpoint(router, "GET", "/upload-links", Action.UPLOAD_LINK_MANAGE)
def list_links(pid: Pid, ctx: Ctx) -> list[LinkOut]:
    """The project's upload links with their use counts."""
    return [_link_out(link) for link in links.list_links(ctx.session, ctx.pid)]


@endpoint(router, "DELETE", "/upload-links/{link_id}", Action.UPLOAD_LINK_MANAGE)
def revoke_link(pid: Pid, link_id: LinkId, ctx: Ctx) -> LinkOut:
    """Revoke a link at once; uploads it started can no longer continue."""
    link = links.revoke(ctx.session, ctx.trail(), ctx.pid, link_id)
    ctx.commit()
    return _link_out(link)
