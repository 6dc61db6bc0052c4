"""The BlobStore contract, run against every backend (local disk and a real SeaweedFS)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from hvelv.storage.base import (
    BlobStore,
    InvalidKeyError,
    ObjectNotFoundError,
    PartOrderError,
    PartTooSmallError,
    UploadNotFoundError,
)

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../escape",
    "a/../../b",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "nul\x00byte",
    "tab\there",
    ".hvelv-tmp-x",
    "x" * 256,
    "a/" * 600,
]


def part_size(store: BlobStore) -> int:
    return max(store.min_part_size, 1000)


# -- whole objects ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 1000, 3 * 1024 * 1024 + 7])
def test_put_and_read_round_trip(store: BlobStore, n: int) -> None:
    data = os.urandom(n)
    info = store.put("p/obj", (data[i : i + 65536] for i in range(0, len(data), 65536)))
    assert info.size == n
    assert info.key == "p/obj"
    assert store.read_bytes("p/obj") == data
    assert store.size("p/obj") == n
    assert store.exists("p/obj")


def test_put_large_stream_uses_constant_parts(store: BlobStore) -> None:
    # Above the S3 backend's single-PUT buffer: exercised as a multipart upload there.
    data = os.urandom(17 * 1024 * 1024 + 3)
    chunks = (data[i : i + 1_000_003] for i in range(0, len(data), 1_000_003))
    assert store.put("big", chunks).size == len(data)
    assert store.read_range("big", 0, len(data)) == data
    assert store.put("one-chunk", [data]).size == len(data)  # one huge chunk
    assert store.read_bytes("one-chunk") == data


def test_put_replaces(store: BlobStore) -> None:
    store.put_bytes("k", b"old")
    store.put_bytes("k", b"new!")
    assert store.read_bytes("k") == b"new!"


def test_failed_put_leaves_nothing(store: BlobStore) -> None:
    def chunks() -> object:
        yield b"partial"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        store.put("half", chunks())  # type: ignore[arg-type]
    assert not store.exists("half")
    assert list(store.list("")) == []


def test_ranges(store: BlobStore) -> None:
    data = os.urandom(5000)
    store.put_bytes("r", data)
    assert store.read_range("r", 0, 5000) == data
    assert store.read_range("r", 10, 20) == data[10:20]
    assert store.read_range("r", 4999, 5000) == data[-1:]
    assert store.read_range("r", 0, 0) == b""
    assert store.read_range("r", 5000, 5000) == b""
    assert b"".join(store.open_range("r", 100)) == data[100:]
    assert b"".join(store.open_range("r", 5000)) == b""
    chunks = list(store.open_range("r", 1, 4001, chunk_size=1000))
    assert b"".join(chunks) == data[1:4001]
    assert max(len(c) for c in chunks) <= 1000
    for start, end in [(0, 5001), (5001, 5002), (10, 5), (-1, 3)]:
        with pytest.raises(ValueError, match="range"):
            store.read_range("r", start, end)


def test_missing_object_fails_before_iteration(store: BlobStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.open_range("nope")  # no next() needed
    with pytest.raises(ObjectNotFoundError):
        store.read_range("nope", 0, 1)
    with pytest.raises(ObjectNotFoundError):
        store.stat("nope")
    assert not store.exists("nope")


def test_delete_is_idempotent(store: BlobStore) -> None:
    store.put_bytes("d/x", b"1")
    store.delete("d/x")
    assert not store.exists("d/x")
    store.delete("d/x")
    store.delete("never/was")


def listed(store: BlobStore, prefix: str = "") -> list[str]:
    # Order is not part of the contract: SeaweedFS lists directory by directory.
    return sorted(o.key for o in store.list(prefix))


def test_list_by_prefix(store: BlobStore) -> None:
    for key in ["b", "a/c/d", "a.txt", "a/b", "ab", "z/y"]:
        store.put_bytes(key, key.encode())
    assert listed(store) == ["a.txt", "a/b", "a/c/d", "ab", "b", "z/y"]
    assert listed(store, "a/") == ["a/b", "a/c/d"]
    assert listed(store, "a") == ["a.txt", "a/b", "a/c/d", "ab"]
    assert listed(store, "a/c") == ["a/c/d"]
    assert listed(store, "q") == []
    assert {o.key: o.size for o in store.list("z")} == {"z/y": 3}


def test_copy_and_rename(store: BlobStore) -> None:
    store.put_bytes("src/a", b"payload")
    assert store.copy("src/a", "dst/b").size == 7
    assert store.read_bytes("dst/b") == b"payload"
    assert store.rename("src/a", "moved/c").key == "moved/c"
    assert not store.exists("src/a")
    assert store.read_bytes("moved/c") == b"payload"
    with pytest.raises(ObjectNotFoundError):
        store.copy("src/a", "x")
    with pytest.raises(ObjectNotFoundError):
        store.rename("src/a", "x")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_rejected_everywhere(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidKeyError):
        store.read_range(key, 0, 0)
    with pytest.raises(InvalidKeyError):
        store.stat(key)
    with pytest.raises(InvalidKeyError):
        store.delete(key)
    with pytest.raises(InvalidKeyError):
        store.create_parts(key)


def test_unicode_keys(store: BlobStore) -> None:
    store.put_bytes("prøve/blåbær æøå.txt", b"ok")
    assert store.read_bytes("prøve/blåbær æøå.txt") == b"ok"
    assert [o.key for o in store.list("prøve/")] == ["prøve/blåbær æøå.txt"]


# -- multipart -------------------------------------------------------------------------------


def test_multipart_round_trip(store: BlobStore) -> None:
    size = part_size(store)
    parts = [os.urandom(size), os.urandom(size), os.urandom(123)]
    upload = store.create_parts("up/file")
    for number, data in enumerate(parts, start=1):
        info = store.write_part("up/file", upload, number, data)
        assert (info.number, info.size) == (number, len(data))
    assert [(p.number, p.size) for p in store.list_parts("up/file", upload)] == [
        (1, size),
        (2, size),
        (3, 123),
    ]
    assert not store.exists("up/file")
    info = store.complete("up/file", upload, [1, 2, 3])
    assert info.size == 2 * size + 123
    assert store.read_bytes("up/file") == b"".join(parts)
    with pytest.raises(UploadNotFoundError):
        store.write_part("up/file", upload, 4, b"late")
    with pytest.raises(UploadNotFoundError):
        store.complete("up/file", upload, [1])
    assert [u.upload_id for u in store.list_uploads("up/")] == []


def test_uncached_parts_and_reads_are_the_same_bytes(store: BlobStore) -> None:
    size = part_size(store)
    parts = [os.urandom(size), os.urandom(size + 5)]
    upload = store.create_parts("nocache")
    for number, data in enumerate(parts, start=1):
        store.write_part("nocache", upload, number, data, cache=False)
    store.complete("nocache", upload, [1, 2])
    whole = b"".join(parts)
    assert b"".join(store.open_range("nocache", cache=False)) == whole
    got = list(store.open_range("nocache", 7, size + 9, chunk_size=1000, cache=False))
    assert b"".join(got) == whole[7 : size + 9]


def test_single_small_part(store: BlobStore) -> None:
    upload = store.create_parts("one")
    store.write_part("one", upload, 1, b"tiny")
    assert store.complete("one", upload, [1]).size == 4
    assert store.read_bytes("one") == b"tiny"


def test_another_process_continues_the_upload(
    store: BlobStore, reopen: Callable[[], BlobStore]
) -> None:
    size = part_size(store)
    a, b = os.urandom(size), os.urandom(77)
    upload = store.create_parts("cont")
    store.write_part("cont", upload, 1, a)
    other = reopen()  # no shared memory: only the key and the upload id
    assert [p.number for p in other.list_parts("cont", upload)] == [1]
    assert [u.upload_id for u in other.list_uploads("co")] == [upload]
    other.write_part("cont", upload, 2, b)
    other.complete("cont", upload, [1, 2])
    assert store.read_bytes("cont") == a + b


def test_parts_are_written_once(store: BlobStore) -> None:
    size = part_size(store)
    a, b = os.urandom(size), os.urandom(size)
    upload = store.create_parts("once")
    store.write_part("once", upload, 1, a)
    store.write_part("once", upload, 2, b)
    for number in (1, 2):
        with pytest.raises(PartOrderError, match=r"already stored|cannot follow"):
            store.write_part("once", upload, number, os.urandom(10))
    assert [p.size for p in store.list_parts("once", upload)] == [size, size]
    store.complete("once", upload, [1, 2])
    assert store.read_bytes("once") == a + b


def test_parts_beyond_the_completed_ones_are_discarded(store: BlobStore) -> None:
    size = part_size(store)
    a, b = os.urandom(size), os.urandom(size)
    upload = store.create_parts("extra")
    store.write_part("extra", upload, 1, a)
    store.write_part("extra", upload, 2, b)
    store.complete("extra", upload, [1])
    assert store.read_bytes("extra") == a


def test_part_order_is_enforced(store: BlobStore) -> None:
    size = part_size(store)
    upload = store.create_parts("order")
    with pytest.raises(PartOrderError):
        store.write_part("order", upload, 2, os.urandom(size))
    store.write_part("order", upload, 1, os.urandom(size))
    store.write_part("order", upload, 2, os.urandom(size))
    with pytest.raises(PartOrderError):
        store.write_part("order", upload, 1, os.urandom(size))
    with pytest.raises(PartOrderError):
        store.write_part("order", upload, 4, os.urandom(size))
    with pytest.raises(PartOrderError):
        store.complete("order", upload, [1, 3])
    with pytest.raises(PartOrderError):
        store.complete("order", upload, [])
    with pytest.raises(PartOrderError):
        store.complete("order", upload, [1, 2, 3])  # part 3 was never written
    store.abort("order", upload)


def test_small_parts_are_refused_when_not_last(store: BlobStore) -> None:
    upload = store.create_parts("small")
    if store.min_part_size <= 1:  # local disk: any size will do
        store.write_part("small", upload, 1, b"x")
        store.write_part("small", upload, 2, b"y")
        assert store.complete("small", upload, [1, 2]).size == 2
        return
    store.write_part("small", upload, 1, b"x" * (store.min_part_size - 1))
    with pytest.raises(PartTooSmallError):
        store.write_part("small", upload, 2, b"y")
    store.abort("small", upload)


def test_abort_and_unknown_uploads(store: BlobStore) -> None:
    upload = store.create_parts("ab")
    store.write_part("ab", upload, 1, b"data")
    assert [(u.key, u.upload_id) for u in store.list_uploads("ab")] == [("ab", upload)]
    store.abort("ab", upload)
    store.abort("ab", upload)  # idempotent
    assert list(store.list_uploads("ab")) == []
    assert not store.exists("ab")
    with pytest.raises(UploadNotFoundError):
        store.write_part("ab", upload, 1, b"data")
    with pytest.raises(UploadNotFoundError):
        store.list_parts("ab", upload)
    other = store.create_parts("ab")
    with pytest.raises(UploadNotFoundError):
        store.write_part("not-ab", other, 1, b"data")  # the id belongs to another key
    store.abort("ab", other)
