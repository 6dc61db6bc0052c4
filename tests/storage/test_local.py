"""Local filesystem specifics: permissions, layout, fsync ordering, crash debris."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from hvelv.storage import local as local_mod
from hvelv.storage.base import PartOrderError, PartTooSmallError, StorageError, UploadNotFoundError
from hvelv.storage.local import LocalBlobStore


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "root")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_0600_and_directories_0700(store: LocalBlobStore) -> None:
    store.put_bytes("a/b/c.bin", b"x")
    path = store.root / "objects" / "a" / "b" / "c.bin"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(path.parent.parent) == 0o700
    upload = store.create_parts("a/d")
    store.write_part("a/d", upload, 1, b"y")
    store.complete("a/d", upload, [1])
    assert mode(store.root / "objects" / "a" / "d") == 0o600
    store.copy("a/d", "e/f")
    assert mode(store.root / "objects" / "e" / "f") == 0o600


def test_nothing_escapes_the_root(store: LocalBlobStore, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"s")
    for key in ("../secret", "../../secret", "/etc/passwd", "a/../../secret", "..\\secret"):
        with pytest.raises(ValueError, match="key"):
            store.read_bytes(key)
    with pytest.raises(ValueError, match="key"):
        store.put_bytes("../planted", b"x")
    assert not (tmp_path / "planted").exists()


def test_fsync_before_rename_and_directory_fsync_after(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(f"fsync-{kind}")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append("rename")
        real_replace(src, dst)

    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        events.append("fdatasync-file")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "replace", replace)
    store.put_bytes("x/y", b"data")
    assert events[-3:] == ["fsync-file", "rename", "fsync-dir"]

    events.clear()
    upload = store.create_parts("x/z")
    events.clear()
    store.write_part("x/z", upload, 1, b"part")
    # data synced, then its journal line appended and synced; the first part also makes
    # each new directory entry durable before the next step relies on it
    assert events == ["fdatasync-file", "fsync-dir", "fdatasync-file", "fsync-dir"]
    events.clear()
    store.write_part("x/z", upload, 2, b"more")
    assert events == ["fdatasync-file", "fdatasync-file"]
    events.clear()
    store.complete("x/z", upload, [1, 2])
    assert events[:3] == ["fsync-file", "rename", "fsync-dir"]


def test_uncached_writes_and_reads_let_their_pages_go(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    advice: list[tuple[int, int, int]] = []
    real = os.posix_fadvise

    def fadvise(fd: int, offset: int, length: int, how: int) -> None:
        advice.append((offset, length, how))
        real(fd, offset, length, how)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    upload = store.create_parts("k")
    store.write_part("k", upload, 1, b"a" * 10)
    assert advice == []  # cached by default
    store.write_part("k", upload, 2, b"b" * 20, cache=False)
    assert advice == [(10, 20, os.POSIX_FADV_DONTNEED)]  # only the part just synced
    store.complete("k", upload, [1, 2])
    advice.clear()
    assert b"".join(store.open_range("k", 5, 28, chunk_size=10, cache=False)) == (
        b"a" * 5 + b"b" * 18
    )
    dropped = [(o, n) for o, n, how in advice if how == os.POSIX_FADV_DONTNEED]
    assert dropped == [(5, 10), (15, 10), (25, 3)]  # behind the reader, chunk by chunk
    advice.clear()
    assert b"".join(store.open_range("k")) == b"a" * 10 + b"b" * 20
    assert all(how != os.POSIX_FADV_DONTNEED for _, _, how in advice)


def test_bytes_beyond_the_journal_are_ignored(store: LocalBlobStore) -> None:
    upload = store.create_parts("k")
    store.write_part("k", upload, 1, b"first")
    # A crash after appending part 2's data but before its journal entry:
    with (store.root / "uploads" / upload / "data").open("ab") as f:
        f.write(b"GARBAGE")
    assert [p.size for p in store.list_parts("k", upload)] == [5]
    store.write_part("k", upload, 2, b"second")
    store.complete("k", upload, [1, 2])
    assert store.read_bytes("k") == b"firstsecond"


@pytest.mark.parametrize(
    "torn",
    [b"83", b"\x00\x00\x00\x00", b"\x00\x00\x00\x00\n", b"\x00\x0012\n", b"12x\n", b"\n"],
    ids=["no-newline", "zeros", "zeros-newline", "zeros-then-digits", "not-digits", "empty-line"],
)
def test_a_torn_journal_line_ends_the_journal(store: LocalBlobStore, torn: bytes) -> None:
    upload = store.create_parts("k")
    store.write_part("k", upload, 1, b"first")
    journal = store.root / "uploads" / upload / "parts"
    # a crash while part 2's line was being appended (its data is in the data file)
    with (store.root / "uploads" / upload / "data").open("ab") as f:
        f.write(b"GARBAGE")
    with journal.open("ab") as f:
        f.write(torn)
    assert [p.size for p in store.list_parts("k", upload)] == [5]
    store.write_part("k", upload, 2, b"second")
    # the torn line overwritten, nothing after it
    assert journal.read_bytes() == b"%020d\n%020d\n" % (5, 6)
    store.write_part("k", upload, 3, b"!")
    store.complete("k", upload, [1, 2, 3])
    assert store.read_bytes("k") == b"firstsecond!"


def test_complete_moves_the_data_without_copying(store: LocalBlobStore) -> None:
    upload = store.create_parts("k")
    store.write_part("k", upload, 1, b"abc")
    inode = (store.root / "uploads" / upload / "data").stat().st_ino
    store.complete("k", upload, [1])
    assert (store.root / "objects" / "k").stat().st_ino == inode
    assert list((store.root / "uploads").iterdir()) == []


def test_emulated_min_part_size(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, min_part_size=10)
    upload = store.create_parts("k")
    store.write_part("k", upload, 1, b"123456789")
    with pytest.raises(PartTooSmallError):
        store.write_part("k", upload, 2, b"x")
    assert store.complete("k", upload, [1]).size == 9  # a small last part is fine


def test_debris_of_an_interrupted_removal_is_swept(store: LocalBlobStore) -> None:
    upload = store.create_parts("k")
    store.write_part("k", upload, 1, b"abc")
    (store.root / "uploads" / upload / "meta.json").unlink()  # crash mid-removal
    assert list(store.list_uploads()) == []
    assert not (store.root / "uploads" / upload).exists()
    with pytest.raises(UploadNotFoundError):
        store.list_parts("k", upload)


def test_upload_ids_cannot_traverse(store: LocalBlobStore) -> None:
    for bad in ("../objects", "x" * 32, "", "/tmp"):
        with pytest.raises(UploadNotFoundError):
            store.write_part("k", bad, 1, b"x")


def test_key_that_is_also_a_directory(store: LocalBlobStore) -> None:
    store.put_bytes("a/b", b"1")
    with pytest.raises(StorageError, match="conflicts"):
        store.put_bytes("a", b"2")
    with pytest.raises(StorageError, match="conflicts"):
        store.put_bytes("a/b/c", b"3")
    assert store.read_bytes("a/b") == b"1"


def test_delete_prunes_empty_directories(store: LocalBlobStore) -> None:
    store.put_bytes("p/q/r", b"1")
    store.put_bytes("p/s", b"2")
    store.delete("p/q/r")
    assert not (store.root / "objects" / "p" / "q").exists()
    assert (store.root / "objects" / "p").exists()
    store.delete("p/s")
    assert list((store.root / "objects").iterdir()) == []


def test_temp_files_are_invisible(store: LocalBlobStore) -> None:
    store.put_bytes("d/real", b"1")
    (store.root / "objects" / "d" / (local_mod._TMP_PREFIX + "abc")).write_bytes(b"tmp")
    assert [o.key for o in store.list()] == ["d/real"]


def test_writers_of_one_upload_take_turns(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests writing the same part (one took over a lapsed lease while the other
    still ran): one stores it, the other waits for it and is refused; one journal line."""
    upload = store.create_parts("k")
    real = local_mod._write_all
    entered = threading.Barrier(2, timeout=5)

    def slow_write(fd: int, data: bytes, offset: int | None = None) -> None:
        if len(data) == 1000:  # the parts, not the journal lines
            time.sleep(0.2)
        real(fd, data, offset)

    monkeypatch.setattr(local_mod, "_write_all", slow_write)
    outcomes: list[str] = []

    def write() -> None:
        entered.wait()
        try:
            store.write_part("k", upload, 1, os.urandom(1000))
            outcomes.append("stored")
        except PartOrderError:
            outcomes.append("refused")

    threads = [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "stored"]
    assert [p.size for p in store.list_parts("k", upload)] == [1000]
