"""Encrypted segment streams on real stores: the path the tus server will take.

One encrypted segment per part, the partial last segment checkpointed in a small object,
an interruption with the writer lost, and a resumed writer in a fresh store instance.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable

import pytest

from hvelv.crypto.segments import (
    IntegrityError,
    SegmentReader,
    SegmentWriter,
    encrypted_size,
    plaintext_sha256,
)
from hvelv.storage.base import BlobStore, plan_segment_size

KEY = os.urandom(32)


def reader_for(store: BlobStore, key: str, oid: bytes, segment_size: int) -> SegmentReader:
    return SegmentReader(
        KEY,
        oid,
        lambda a, b: store.read_range(key, a, b),
        store.size(key),
        segment_size=segment_size,
        open_range=lambda a, b, size: store.open_range(key, a, b, size),
    )


def test_interrupted_encrypted_upload_resumes_in_another_process(
    store: BlobStore, reopen: Callable[[], BlobStore]
) -> None:
    seg = plan_segment_size(store, preferred=1024 * 1024)
    assert seg >= store.min_part_size
    data = os.urandom(3 * seg + 12345)
    key, tail_key, oid = "proj/objects/f1", "proj/uploads/f1.tail", b"f1"

    # Process A: two PATCH-like writes, then it dies.
    store_a = store
    upload = store_a.create_parts(key)
    writer = SegmentWriter(KEY, oid, seg)
    part = 0
    for piece in (data[:1000], data[1000 : seg + 5000]):
        for segment in writer.write(piece):
            part += 1
            store_a.write_part(key, upload, part, segment)
        store_a.put_bytes(tail_key, writer.checkpoint())
    acknowledged = writer.plaintext_length
    del writer

    # Process B knows only the key, the upload id and what the store says.
    store_b = reopen()
    parts = store_b.list_parts(key, upload)
    resumed = SegmentWriter.resume(
        KEY,
        oid,
        segment_size=seg,
        stored_bytes=sum(p.size for p in parts),
        tail=store_b.read_bytes(tail_key),
        expected_length=acknowledged,
    )
    part = len(parts)
    for segment in resumed.write(data[acknowledged:]):
        part += 1
        store_b.write_part(key, upload, part, segment)
    part += 1
    store_b.write_part(key, upload, part, resumed.finish())
    info = store_b.complete(key, upload, range(1, part + 1))
    store_b.delete(tail_key)
    assert info.size == encrypted_size(len(data), seg)

    # The hash comes from one verifying pass over the completed object.
    digest, length = plaintext_sha256(KEY, oid, store_b.open_range(key), segment_size=seg)
    assert (digest, length) == (hashlib.sha256(data).hexdigest(), len(data))

    # Random ranges equal the slice.
    reader = reader_for(store_b, key, oid, seg)
    rng = random.Random(7)
    for _ in range(10):
        start = rng.randrange(0, len(data))
        end = rng.randrange(start, len(data) + 1)
        assert reader.read(start, end) == data[start:end]


def test_flipped_stored_byte_is_detected(store: BlobStore) -> None:
    seg = 1024
    data = os.urandom(5 * seg)
    writer = SegmentWriter(KEY, b"obj", seg)
    store.put("obj", [*writer.write(data), writer.finish()])
    blob = bytearray(store.read_bytes("obj"))
    blob[len(blob) // 2] ^= 0x04
    store.put_bytes("obj", bytes(blob))
    with pytest.raises(IntegrityError, match="segment 2"):
        plaintext_sha256(KEY, b"obj", store.open_range("obj", chunk_size=100))
    reader = reader_for(store, "obj", b"obj", seg)
    assert reader.read(0, seg) == data[:seg]  # untouched segments still read fine
    with pytest.raises(IntegrityError, match="segment 2"):
        reader.read(2 * seg + 10, 2 * seg + 20)
