"""BlobStore on a local filesystem, with fsync before every acknowledgement.

Layout under ``root``::

    objects/<key>                 the objects (0600 files, 0700 directories)
    uploads/<upload_id>/meta.json key and start time of a multipart upload
    uploads/<upload_id>/data      the parts, back to back
    uploads/<upload_id>/parts     part sizes, one decimal line each, 21 bytes wide (the journal)

Parts are appended to a single data file and, once the data is fsync'ed, recorded by
appending one line to a small journal that is fsync'ed in turn; the journal is the truth,
bytes of the data file beyond it are leftovers of an interrupted write and are overwritten.
Only whole lines of digits count: a line torn by a crash (no newline, or zeros where the
filesystem extended the file but the write did not land) ends the journal, and the next
part's line, as wide as any, overwrites it. Writers of one upload take turns (``flock``).
Appending costs one fsync per part, where replacing the journal (temporary file, fsync,
rename, directory fsync) cost three and measured as long as writing an 8 MiB part.
``complete`` truncates the data file to the completed parts and renames it into place, so
an upload's bytes are written once (no re-assembly copy).

Whole objects are written to a temporary file in the target directory, fsync'ed, renamed
over the target, and the directory is fsync'ed before returning.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import stat as stat_mod
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final

from hvelv.storage.base import (
    DEFAULT_CHUNK_SIZE,
    RESERVED_PREFIX,
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

__all__ = ["LocalBlobStore"]

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
_TMP_PREFIX: Final = RESERVED_PREFIX + "tmp-"
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_journal(path: Path) -> tuple[list[int], int]:
    """The part sizes of a journal and the length in bytes of its valid lines."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    sizes: list[int] = []
    end = 0
    while (newline := raw.find(b"\n", end)) != -1:
        line = raw[end:newline]
        if not line.isdigit():
            break
        sizes.append(int(line))
        end = newline + 1
    return sizes, end


def _write_all(fd: int, data: BytesLike, offset: int | None = None) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        if offset is not None:
            offset += n


class LocalBlobStore(BlobStore):
    """Objects as files under ``root``. ``min_part_size`` can emulate S3 in tests."""

    max_parts = 10_000

    def __init__(self, root: Path | str, *, min_part_size: int = 1) -> None:
        self.root = Path(root).resolve()
        self.min_part_size = min_part_size
        self._objects = self.root / "objects"
        self._uploads = self.root / "uploads"
        for path in (self.root, self._objects, self._uploads):
            path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self._objects.joinpath(*validate_key(key).split("/"))

    def _ensure_parent(self, path: Path) -> None:
        """Create missing parent directories (0700), fsync'ing each new directory entry."""
        missing: list[Path] = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=DIR_MODE, exist_ok=True)  # a racing creator is fine
            except (FileExistsError, NotADirectoryError):
                raise StorageError("key conflicts with an existing object") from None
            _fsync_dir(directory.parent)
        if not path.parent.is_dir():
            raise StorageError("key conflicts with an existing object")

    def _stat_file(self, key: str) -> os.stat_result:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(key) from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise ObjectNotFoundError(key)
        return st

    def _atomic_write(self, path: Path, chunks: Iterable[BytesLike]) -> int:
        """Write ``chunks`` to ``path`` via temp file + fsync + rename + fsync dir."""
        self._ensure_parent(path)
        tmp = path.with_name(_TMP_PREFIX + secrets.token_hex(8))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        total = 0
        try:
            try:
                for chunk in chunks:
                    _write_all(fd, chunk)
                    total += len(chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
            if path.is_dir():
                raise StorageError("key conflicts with an existing directory of objects")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _fsync_dir(path.parent)
        return total

    def _prune_dirs(self, directory: Path) -> None:
        """Remove empty directories up to (not including) ``objects/``."""
        while directory != self._objects and self._objects in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            _fsync_dir(directory.parent)
            directory = directory.parent

    # -- whole objects ---------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[BytesLike]) -> ObjectInfo:
        path = self._path(key)
        size = self._atomic_write(path, chunks)
        return ObjectInfo(key, size, self._mtime(path.stat()))

    @staticmethod
    def _mtime(st: os.stat_result) -> datetime:
        return datetime.fromtimestamp(st.st_mtime, UTC)

    def open_range(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        cache: bool = True,
    ) -> Iterator[bytes]:
        path = self._path(key)
        try:
            f = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(key) from None
        try:
            end = check_range(start, end, os.fstat(f.fileno()).st_size)
            f.seek(start)
            # a range is read front to back: ask the kernel for a larger read-ahead
            os.posix_fadvise(f.fileno(), start, end - start, os.POSIX_FADV_SEQUENTIAL)
        except BaseException:
            f.close()
            raise
        return self._iter_file(f, start, end - start, chunk_size, cache)

    @staticmethod
    def _iter_file(
        f: BinaryIO, position: int, remaining: int, chunk_size: int, cache: bool
    ) -> Iterator[bytes]:
        with f:
            while remaining > 0:
                chunk = f.read(min(chunk_size, remaining))
                if not chunk:
                    raise StorageError("object shrank while being read")
                if not cache:
                    # let the pages just read go: the next reads reuse them instead of
                    # growing the page cache (like PostgreSQL's ring buffer for big scans)
                    os.posix_fadvise(f.fileno(), position, len(chunk), os.POSIX_FADV_DONTNEED)
                position += len(chunk)
                remaining -= len(chunk)
                yield chunk

    def read_range(self, key: str, start: int, end: int) -> bytes:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(key) from None
        try:
            end = check_range(start, end, os.fstat(fd).st_size)
            parts = []
            while start < end:
                chunk = os.pread(fd, end - start, start)
                if not chunk:
                    raise StorageError("object shrank while being read")
                parts.append(chunk)
                start += len(chunk)
            return b"".join(parts)
        finally:
            os.close(fd)

    def stat(self, key: str) -> ObjectInfo:
        st = self._stat_file(key)
        return ObjectInfo(key, st.st_size, self._mtime(st))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return
        _fsync_dir(path.parent)
        self._prune_dirs(path.parent)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix reaches; sort by key bytes like S3 does.
        head, _, _ = prefix.rpartition("/")
        base = self._objects.joinpath(*head.split("/")) if head else self._objects
        if head:
            validate_key(head)
        found: list[tuple[bytes, str, os.stat_result]] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED_PREFIX)]
            rel = Path(dirpath).relative_to(self._objects).as_posix()
            for name in filenames:
                if name.startswith(RESERVED_PREFIX):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    try:
                        st = os.stat(os.path.join(dirpath, name))
                    except FileNotFoundError:
                        continue
                    found.append((key.encode(), key, st))
        found.sort()
        for _, key, st in found:
            yield ObjectInfo(key, st.st_size, self._mtime(st))

    def copy(self, src: str, dst: str) -> ObjectInfo:
        dst_path = self._path(dst)
        with self._path_open(src) as f:
            size = self._atomic_write(dst_path, iter(lambda: f.read(DEFAULT_CHUNK_SIZE), b""))
        return ObjectInfo(dst, size, self._mtime(dst_path.stat()))

    def _path_open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(key) from None

    def rename(self, src: str, dst: str) -> ObjectInfo:
        src_path, dst_path = self._path(src), self._path(dst)
        self._stat_file(src)
        self._ensure_parent(dst_path)
        if dst_path.is_dir():
            raise StorageError("key conflicts with an existing directory of objects")
        os.replace(src_path, dst_path)
        _fsync_dir(dst_path.parent)
        if src_path.parent != dst_path.parent:
            _fsync_dir(src_path.parent)
            self._prune_dirs(src_path.parent)
        return self.stat(dst)

    # -- multipart -----------------------------------------------------------------------

    def _upload_dir(self, key: str, upload_id: str) -> Path:
        validate_key(key)
        if not _UPLOAD_ID.match(upload_id):
            raise UploadNotFoundError(f"no upload {upload_id!r}")
        directory = self._uploads / upload_id
        try:
            meta = json.loads((directory / "meta.json").read_text("utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            raise UploadNotFoundError(f"no upload {upload_id!r}") from None
        if meta.get("key") != key:
            raise UploadNotFoundError(f"upload {upload_id!r} is not for this key")
        return directory

    @staticmethod
    def _read_journal(directory: Path) -> builtins.list[int]:
        return _parse_journal(directory / "parts")[0]

    @staticmethod
    def _append_journal(directory: Path, size: int, end: int) -> None:
        """Record one more part durably: its line at ``end`` (after the valid lines), fsync.
        Lines are written 21 bytes wide, so a new line always covers a torn one entirely."""
        line = f"{size:020d}\n".encode("ascii")
        fd = os.open(directory / "parts", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            _write_all(fd, line, end)
            os.ftruncate(fd, end + len(line))  # drop whatever followed a torn line
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def create_parts(self, key: str) -> str:
        validate_key(key)
        upload_id = secrets.token_hex(16)
        # Build the upload directory under a temporary name and rename it into place, so an
        # upload directory without meta.json is always debris of an interrupted removal.
        staging = self._uploads / (_TMP_PREFIX + upload_id)
        staging.mkdir(mode=DIR_MODE)
        meta = {"key": key, "started": datetime.now(UTC).isoformat()}
        self._atomic_write(staging / "meta.json", [json.dumps(meta).encode()])
        os.rename(staging, self._uploads / upload_id)
        _fsync_dir(self._uploads)
        return upload_id

    def write_part(
        self, key: str, upload_id: str, part_number: int, data: BytesLike, *, cache: bool = True
    ) -> PartInfo:
        directory = self._upload_dir(key, upload_id)
        fd = os.open(directory / "data", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            # one writer per upload at a time (closing the file releases the lock): a second
            # one, such as a request that took over a lapsed lease while the first still
            # writes, waits and then finds the part stored
            fcntl.flock(fd, fcntl.LOCK_EX)
            sizes, end = _parse_journal(directory / "parts")
            count = len(sizes)
            if part_number != count + 1:
                raise PartOrderError(
                    f"part {part_number} cannot follow {count} stored part(s): parts are "
                    "written in order, each once"
                )
            if sizes and sizes[-1] < self.min_part_size:
                raise PartTooSmallError(
                    f"part {len(sizes)} has {sizes[-1]} bytes but is not the last; "
                    f"parts must be at least {self.min_part_size} bytes"
                )
            offset = sum(sizes)
            _write_all(fd, data, offset)
            os.ftruncate(fd, offset + len(data))
            os.fdatasync(fd)
            if not cache:
                # the part is on disk: let its pages go, so that the next parts reuse them
                # instead of growing the page cache (filling fresh pages measured 5x
                # slower than reused ones on the VMs here, and an upload is rarely read
                # back at once)
                os.posix_fadvise(fd, offset, len(data), os.POSIX_FADV_DONTNEED)
            if count == 0:
                _fsync_dir(directory)  # the data file's entry, before the journal names it
            self._append_journal(directory, len(data), end)
            if count == 0:
                _fsync_dir(directory)  # the journal's entry
        finally:
            os.close(fd)
        return PartInfo(part_number, len(data))

    def list_parts(self, key: str, upload_id: str) -> builtins.list[PartInfo]:
        sizes = self._read_journal(self._upload_dir(key, upload_id))
        return [PartInfo(i, s) for i, s in enumerate(sizes, start=1)]

    def complete(self, key: str, upload_id: str, part_numbers: Sequence[int]) -> ObjectInfo:
        directory = self._upload_dir(key, upload_id)
        count = check_part_numbers(part_numbers)
        sizes = self._read_journal(directory)
        if count > len(sizes):
            raise PartOrderError(f"only {len(sizes)} part(s) stored, cannot complete {count}")
        for number, size in enumerate(sizes[: count - 1], start=1):
            if size < self.min_part_size:
                raise PartTooSmallError(
                    f"part {number} has {size} bytes, minimum is {self.min_part_size}"
                )
        total = sum(sizes[:count])
        data = directory / "data"
        fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            os.ftruncate(fd, total)
            os.fsync(fd)
        finally:
            os.close(fd)
        path = self._path(key)
        self._ensure_parent(path)
        if path.is_dir():
            raise StorageError("key conflicts with an existing directory of objects")
        os.replace(data, path)
        _fsync_dir(path.parent)
        self._remove_upload(directory)
        return ObjectInfo(key, total, self._mtime(path.stat()))

    def _remove_upload(self, directory: Path) -> None:
        # meta.json first: the upload is gone at once; the rest is swept if we crash here.
        for name in ("meta.json", "data", "parts"):
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
        for leftover in directory.iterdir():  # stray temp files of interrupted writes
            leftover.unlink()
        try:
            directory.rmdir()
        except OSError as exc:  # pragma: no cover - racing writer
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                raise
        _fsync_dir(self._uploads)

    def abort(self, key: str, upload_id: str) -> None:
        try:
            directory = self._upload_dir(key, upload_id)
        except UploadNotFoundError:
            return
        self._remove_upload(directory)

    def list_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        found: list[PendingUpload] = []
        for directory in self._uploads.iterdir():
            try:
                meta = json.loads((directory / "meta.json").read_text("utf-8"))
            except (FileNotFoundError, NotADirectoryError):
                if _UPLOAD_ID.match(directory.name) and directory.is_dir():
                    self._remove_upload(directory)  # debris of an interrupted abort/complete
                continue
            except ValueError:
                continue
            key = str(meta.get("key", ""))
            if key.startswith(prefix):
                started = datetime.fromisoformat(meta["started"]) if "started" in meta else None
                found.append(PendingUpload(key, directory.name, started))
        found.sort(key=lambda u: (u.key.encode(), u.upload_id))
        yield from found
