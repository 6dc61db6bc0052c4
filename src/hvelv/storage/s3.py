"""BlobStore on S3-compatible object storage (SeaweedFS, Ceph RGW, MinIO, AWS) via boto3.

Path-style addressing, configurable endpoint, region and credentials. Multipart uploads map
one to one onto the BlobStore part API; the S3 UploadId *is* the opaque upload id, so no
state is kept in the process or in sidecar objects and any process can continue an upload.
Reads are ranged GETs streamed in chunks.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from hvelv.storage.base import (
    DEFAULT_CHUNK_SIZE,
    BlobStore,
    BytesLike,
    ObjectInfo,
    ObjectNotFoundError,
    PartInfo,
    PartOrderError,
    PartTooSmallError,
    PendingUpload,
    StorageError,
    UploadNotFoundError,
    check_part_numbers,
    check_range,
    validate_key,
)

__all__ = ["S3BlobStore"]

MiB: Final = 1024 * 1024
S3_MIN_PART_SIZE: Final = 5 * MiB
S3_MAX_PARTS: Final = 10_000
#: part size used by ``put`` for streams of unknown length
PUT_PART_SIZE: Final = 8 * MiB
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3BlobStore(BlobStore):
    """Objects in one bucket, optionally under a key prefix (to share a bucket)."""

    min_part_size = S3_MIN_PART_SIZE
    max_parts = S3_MAX_PARTS

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        key_prefix: str = "",
        create_bucket: bool = False,
        client: Any = None,
    ) -> None:
        if key_prefix and not key_prefix.endswith("/"):
            raise ValueError("key_prefix must be empty or end with '/'")
        if key_prefix:
            validate_key(key_prefix.rstrip("/"))
        self.bucket = bucket
        self._prefix = key_prefix
        self._region = region
        if client is None:
            config = Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                retries={"mode": "standard", "max_attempts": 5},
            )
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=config,
            )
        self._s3: Any = client
        if create_bucket:
            self.ensure_bucket()

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self._prefix!r})"

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        try:
            self._s3.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND | {"NoSuchBucket"}:
                raise StorageError(f"cannot access bucket {self.bucket!r}: {_code(exc)}") from exc
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self._region and self._region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            self._s3.create_bucket(**kwargs)
        except ClientError as exc:
            if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise StorageError(f"cannot create bucket {self.bucket!r}: {_code(exc)}") from exc

    def _key(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _unkey(self, s3_key: str) -> str:
        return s3_key[len(self._prefix) :]

    # -- whole objects ---------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[BytesLike]) -> ObjectInfo:
        s3_key = self._key(key)
        buf = bytearray()
        it = iter(chunks)
        for chunk in it:
            buf += chunk
            if len(buf) >= PUT_PART_SIZE:
                return self._put_multipart(key, buf, it)
        self._s3.put_object(Bucket=self.bucket, Key=s3_key, Body=bytes(buf))
        return self.stat(key)

    def _put_multipart(self, key: str, buf: bytearray, rest: Iterator[BytesLike]) -> ObjectInfo:
        """Upload parts of PUT_PART_SIZE, keeping at least one part's worth for the end so
        that the last part is never below the minimum part size."""
        upload_id = self.create_parts(key)
        try:
            number = 0
            for chunk in rest:
                buf += chunk
                while len(buf) >= 2 * PUT_PART_SIZE:
                    number += 1
                    self._upload_part(key, upload_id, number, bytes(buf[:PUT_PART_SIZE]))
                    del buf[:PUT_PART_SIZE]
            while len(buf) >= 2 * PUT_PART_SIZE:
                number += 1
                self._upload_part(key, upload_id, number, bytes(buf[:PUT_PART_SIZE]))
                del buf[:PUT_PART_SIZE]
            number += 1
            self._upload_part(key, upload_id, number, bytes(buf))
            return self.complete(key, upload_id, range(1, number + 1))
        except BaseException:
            self.abort(key, upload_id)
            raise

    def open_range(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        cache: bool = True,
    ) -> Iterator[bytes]:
        s3_key = self._key(key)
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid range [{start}, {end})")
        if end is not None and start == end:
            check_range(start, end, self.size(key))
            return iter(())
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": s3_key}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            resp = self._s3.get_object(**kwargs)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise ObjectNotFoundError(key) from None
            if _code(exc) == "InvalidRange":
                # start at or past the end of the object
                end = check_range(start, end, self.size(key))
                return iter(())
            raise
        length = int(resp["ContentLength"])
        total = length
        if "Range" in kwargs:
            match = _CONTENT_RANGE.match(str(resp.get("ContentRange", "")))
            if not match or match.group(3) == "*":
                resp["Body"].close()
                raise StorageError("server ignored the Range request")
            total = int(match.group(3))
        try:
            end = check_range(start, end, total)
        except ValueError:
            resp["Body"].close()
            raise
        if length != end - start:
            resp["Body"].close()
            raise StorageError(f"expected {end - start} bytes, server sent {length}")
        return self._iter_body(resp["Body"], length, chunk_size)

    @staticmethod
    def _iter_body(body: Any, length: int, chunk_size: int) -> Iterator[bytes]:
        got = 0
        try:
            for chunk in body.iter_chunks(chunk_size):
                got += len(chunk)
                yield chunk
        finally:
            body.close()
        if got != length:
            raise StorageError(f"short read: {got} of {length} bytes")

    def stat(self, key: str) -> ObjectInfo:
        try:
            resp = self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise ObjectNotFoundError(key) from None
            raise
        return ObjectInfo(key, int(resp["ContentLength"]), resp.get("LastModified"))

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._prefix + prefix):
            for obj in page.get("Contents", []):
                yield ObjectInfo(self._unkey(obj["Key"]), int(obj["Size"]), obj.get("LastModified"))

    def copy(self, src: str, dst: str) -> ObjectInfo:
        dst_key = self._key(dst)
        source = {"Bucket": self.bucket, "Key": self._key(src)}
        try:
            # Managed copy: a single CopyObject, or a multipart copy above 5 GiB.
            self._s3.copy(source, self.bucket, dst_key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise ObjectNotFoundError(src) from None
            raise
        return self.stat(dst)

    # -- multipart -----------------------------------------------------------------------

    def _upload_error(self, exc: Exception, upload_id: str) -> Exception:
        code = _code(exc)
        if code in {"NoSuchUpload", *_NOT_FOUND}:
            return UploadNotFoundError(f"no upload {upload_id!r}")
        if code == "EntityTooSmall":
            return PartTooSmallError(f"a part other than the last is below {self.min_part_size}")
        return exc

    def create_parts(self, key: str) -> str:
        resp = self._s3.create_multipart_upload(Bucket=self.bucket, Key=self._key(key))
        return str(resp["UploadId"])

    def _upload_part(self, key: str, upload_id: str, number: int, data: BytesLike) -> None:
        try:
            self._s3.upload_part(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                PartNumber=number,
                Body=data if isinstance(data, bytes | bytearray) else bytes(data),
            )
        except ClientError as exc:
            raise self._upload_error(exc, upload_id) from exc

    def _parts(
        self, key: str, upload_id: str, after: int = 0, limit: int | None = None
    ) -> builtins.list[dict[str, Any]]:
        parts: builtins.list[dict[str, Any]] = []
        marker = after
        try:
            while True:
                kwargs: dict[str, Any] = {
                    "Bucket": self.bucket,
                    "Key": self._key(key),
                    "UploadId": upload_id,
                    "PartNumberMarker": marker,
                }
                if limit is not None:
                    kwargs["MaxParts"] = limit
                resp = self._s3.list_parts(**kwargs)
                page = resp.get("Parts", [])
                parts.extend(page)
                if limit is not None or not resp.get("IsTruncated") or not page:
                    return parts
                marker = int(resp.get("NextPartNumberMarker") or page[-1]["PartNumber"])
        except ClientError as exc:
            raise self._upload_error(exc, upload_id) from exc

    def write_part(
        self, key: str, upload_id: str, part_number: int, data: BytesLike, *, cache: bool = True
    ) -> PartInfo:
        if not 1 <= part_number <= self.max_parts:
            raise PartOrderError(f"part number must be in [1, {self.max_parts}]")
        # The neighbourhood: part_number-1 must exist, part_number and later must not.
        near = {
            int(p["PartNumber"]): int(p["Size"])
            for p in self._parts(key, upload_id, after=max(part_number - 2, 0), limit=2)
        }
        if part_number > 1 and part_number - 1 not in near:
            raise PartOrderError(f"part {part_number - 1} must be written before {part_number}")
        if any(n >= part_number for n in near):
            raise PartOrderError(
                f"part {part_number} or a later one is already stored; parts are written "
                "once (list_parts tells what is stored)"
            )
        if part_number > 1 and near[part_number - 1] < self.min_part_size:
            raise PartTooSmallError(
                f"part {part_number - 1} has {near[part_number - 1]} bytes but is not the "
                f"last; parts must be at least {self.min_part_size} bytes"
            )
        self._upload_part(key, upload_id, part_number, data)
        return PartInfo(part_number, len(data))

    def list_parts(self, key: str, upload_id: str) -> builtins.list[PartInfo]:
        return [PartInfo(int(p["PartNumber"]), int(p["Size"])) for p in self._parts(key, upload_id)]

    def complete(self, key: str, upload_id: str, part_numbers: Sequence[int]) -> ObjectInfo:
        count = check_part_numbers(part_numbers)
        listed = self._parts(key, upload_id)
        stored = {int(p["PartNumber"]): p for p in listed}
        if len(stored) != len(listed):
            # Two uploads of one part number (concurrent writers; SeaweedFS keeps both).
            raise StorageError("a part was stored twice; refusing to guess which one is meant")
        missing = [n for n in range(1, count + 1) if n not in stored]
        if missing:
            raise PartOrderError(f"part(s) {missing[:5]} not stored, cannot complete {count}")
        for number in range(1, count):
            if int(stored[number]["Size"]) < self.min_part_size:
                raise PartTooSmallError(
                    f"part {number} has {stored[number]['Size']} bytes, "
                    f"minimum is {self.min_part_size}"
                )
        parts = [{"PartNumber": n, "ETag": stored[n]["ETag"]} for n in range(1, count + 1)]
        try:
            self._s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except ClientError as exc:
            raise self._upload_error(exc, upload_id) from exc
        return self.stat(key)

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self._s3.abort_multipart_upload(
                Bucket=self.bucket, Key=self._key(key), UploadId=upload_id
            )
        except ClientError as exc:
            err = self._upload_error(exc, upload_id)
            if not isinstance(err, UploadNotFoundError):
                raise err from exc

    def list_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        paginator = self._s3.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._prefix + prefix):
            for up in page.get("Uploads", []):
                yield PendingUpload(self._unkey(up["Key"]), up["UploadId"], up.get("Initiated"))
