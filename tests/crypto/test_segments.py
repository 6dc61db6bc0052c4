"""The encrypted segment stream: round trips, random access, tampering, resumption."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.crypto.segments import (
    DEFAULT_SEGMENT_SIZE,
    FORMAT_VERSION,
    HEADER_SIZE,
    SEGMENT_OVERHEAD,
    IntegrityError,
    SegmentReader,
    SegmentWriter,
    UnsupportedFormatError,
    ciphertext_span,
    decrypt_stream,
    encrypt_bytes,
    encrypted_size,
    header_bytes,
    parse_header,
    plaintext_sha256,
    plaintext_size,
)

KEY = bytes(range(32))
OID = b"project-1/object-42"
S = 64  # small segments keep the tests fast; the format does not care


def encrypt(data: bytes, segment_size: int = S, key: bytes = KEY, oid: bytes = OID) -> bytes:
    return encrypt_bytes(key, oid, data, segment_size)


def decrypt(blob: bytes, key: bytes = KEY, oid: bytes = OID) -> bytes:
    return b"".join(decrypt_stream(key, oid, [blob]))


def reader(blob: bytes, key: bytes = KEY, oid: bytes = OID, **kw: int) -> SegmentReader:
    return SegmentReader(key, oid, lambda a, b: blob[a:b], len(blob), **kw)


def split_segments(blob: bytes, segment_size: int = S) -> tuple[bytes, list[bytes]]:
    """Header and the list of stored segments (the last one is the final segment)."""
    header, body = blob[:HEADER_SIZE], blob[HEADER_SIZE:]
    full = segment_size + SEGMENT_OVERHEAD
    segs = [body[i : i + full] for i in range(0, len(body), full)]
    return header, segs


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, S - 1, S, S + 1, 3 * S, 3 * S + 5])
def test_round_trip_sizes(n: int) -> None:
    data = os.urandom(n)
    w = SegmentWriter(KEY, OID, S)
    blob = b"".join(w.write(data)) + w.finish()
    assert len(blob) == encrypted_size(n, S)
    assert plaintext_size(len(blob), S) == n
    assert decrypt(blob) == data
    assert reader(blob).read() == data
    assert w.sha256_hex() == hashlib.sha256(data).hexdigest()
    assert w.plaintext_length == n


def test_zero_byte_object_is_header_plus_empty_final_segment() -> None:
    blob = encrypt(b"")
    assert len(blob) == HEADER_SIZE + SEGMENT_OVERHEAD
    assert decrypt(blob) == b""
    r = reader(blob)
    assert r.plaintext_size == 0
    assert r.read() == b""


def test_default_segment_size_multi_segment() -> None:
    data = os.urandom(2 * DEFAULT_SEGMENT_SIZE + 12345)
    w = SegmentWriter(KEY, OID)
    parts = w.write(data[:100]) + w.write(data[100:]) + [w.finish()]
    assert [len(p) for p in parts] == [
        HEADER_SIZE + DEFAULT_SEGMENT_SIZE + SEGMENT_OVERHEAD,
        DEFAULT_SEGMENT_SIZE + SEGMENT_OVERHEAD,
        12345 + SEGMENT_OVERHEAD,
    ]
    blob = b"".join(parts)
    assert decrypt(blob) == data
    assert parse_header(blob) == DEFAULT_SEGMENT_SIZE
    assert blob[4] == FORMAT_VERSION


def test_write_returns_one_item_per_segment_and_buffers_at_most_one() -> None:
    w = SegmentWriter(KEY, OID, S)
    assert w.write(b"x" * (S - 1)) == []
    assert w.buffered == S - 1
    out = w.write(b"x" * (2 * S + 1))  # 3S bytes in total: three whole segments
    assert len(out) == 3
    assert w.buffered == 0
    out += w.write(b"y" * (S + 5))
    assert len(out) == 4
    assert w.buffered == 5
    assert w.segments_emitted == 4
    assert w.bytes_emitted == sum(len(o) for o in out)


def test_same_plaintext_encrypts_differently() -> None:
    assert encrypt(b"a" * 200) != encrypt(b"a" * 200)


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=700),
    segment_size=st.integers(1, 80),
    cuts=st.lists(st.integers(0, 700), max_size=8),
)
def test_any_chunking_round_trips(data: bytes, segment_size: int, cuts: list[int]) -> None:
    w = SegmentWriter(KEY, OID, segment_size)
    out: list[bytes] = []
    prev = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        out += w.write(data[prev:cut])
        prev = cut
    out.append(w.finish())
    blob = b"".join(out)
    assert len(blob) == encrypted_size(len(data), segment_size)
    # decrypt from arbitrarily small chunks too
    chunks = [blob[i : i + 7] for i in range(0, len(blob), 7)]
    assert b"".join(decrypt_stream(KEY, OID, chunks, segment_size=segment_size)) == data
    assert w.sha256_hex() == hashlib.sha256(data).hexdigest()


# -- random access -------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n=st.integers(0, 600), segment_size=st.integers(1, 100))
def test_random_ranges_equal_the_slice(data: st.DataObject, n: int, segment_size: int) -> None:
    plain = os.urandom(n)
    blob = encrypt(plain, segment_size)
    start = data.draw(st.integers(0, n))
    end = data.draw(st.integers(start, n))
    reads: list[tuple[int, int]] = []

    def read(a: int, b: int) -> bytes:
        reads.append((a, b))
        return blob[a:b]

    r = SegmentReader(KEY, OID, read, len(blob), segment_size=segment_size)
    got = b"".join(r.iter_range(start, end, verify_length=False))
    assert got == plain[start:end]
    span = ciphertext_span(start, end, n, segment_size)
    # Only the covering segments were read, one segment per call.
    for a, b in reads:
        assert span.start <= a < b <= span.end
        assert b - a <= segment_size + SEGMENT_OVERHEAD
    assert len(reads) == max(0, span.last_segment - span.first_segment + 1)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n=st.integers(0, 600), segment_size=st.integers(1, 100))
def test_random_ranges_streamed_in_one_call(data: st.DataObject, n: int, segment_size: int) -> None:
    plain = os.urandom(n)
    blob = encrypt(plain, segment_size)
    start = data.draw(st.integers(0, n))
    end = data.draw(st.integers(start, n))
    chunk = data.draw(st.integers(1, 50))
    as_asked = data.draw(st.booleans())  # chunks of the size asked for: one segment each
    calls: list[tuple[int, int]] = []

    def open_range(a: int, b: int, size: int) -> list[bytes]:
        calls.append((a, b))
        step = size if as_asked else chunk
        assert size == segment_size + SEGMENT_OVERHEAD
        return [blob[i : min(i + step, b)] for i in range(a, b, step)]

    r = SegmentReader(
        KEY,
        OID,
        lambda a, b: blob[a:b],
        len(blob),
        segment_size=segment_size,
        open_range=open_range,
    )
    assert r.read(start, end) == plain[start:end]
    span = ciphertext_span(start, end, n, segment_size)
    assert len(calls) <= 1
    if calls:
        assert calls[0] == (span.start, span.end)


def test_streamed_reader_detects_tampering_and_short_streams() -> None:
    plain = os.urandom(5 * S + 3)
    blob = bytearray(encrypt(plain))
    blob[HEADER_SIZE + 3 * (S + SEGMENT_OVERHEAD) + 5] ^= 1

    def make(data: bytes) -> SegmentReader:
        return SegmentReader(
            KEY,
            OID,
            lambda a, b: data[a:b],
            len(data),
            segment_size=S,
            open_range=lambda a, b, size: [data[a:b]],
        )

    r = make(bytes(blob))
    assert r.read(0, 3 * S) == plain[: 3 * S]
    with pytest.raises(IntegrityError, match="segment 3"):
        r.read(0, 5 * S)
    good = encrypt(plain)
    short = SegmentReader(
        KEY,
        OID,
        lambda a, b: good[a:b],
        len(good),
        segment_size=S,
        open_range=lambda a, b, size: [good[a : b - 1]],
    )
    with pytest.raises(IntegrityError, match="short read"):
        short.read(0, 5 * S + 3)


def test_reader_reads_header_when_segment_size_unknown() -> None:
    plain = os.urandom(1000)
    blob = encrypt(plain, 100)
    r = reader(blob)
    assert r.segment_size == 100
    assert r.read(150, 451) == plain[150:451]


def test_verify_length_reads_final_segment_once() -> None:
    plain = os.urandom(10 * S + 3)
    blob = encrypt(plain)
    reads: list[tuple[int, int]] = []

    def read(a: int, b: int) -> bytes:
        reads.append((a, b))
        return blob[a:b]

    r = SegmentReader(KEY, OID, read, len(blob), segment_size=S)
    assert r.read(0, 5) == plain[:5]
    assert reads[0][1] == len(blob)  # the final segment is authenticated first
    reads.clear()
    assert r.read(S, S + 5) == plain[S : S + 5]
    assert len(reads) == 1


def test_range_outside_object_is_a_value_error() -> None:
    r = reader(encrypt(b"abc"))
    with pytest.raises(ValueError, match="outside"):
        r.read(0, 4)


# -- tampering -----------------------------------------------------------------------------


def test_flipped_byte_anywhere_is_detected() -> None:
    plain = os.urandom(3 * S + 10)
    blob = encrypt(plain)
    for pos in range(len(blob)):
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(IntegrityError):
            decrypt(bytes(bad))


def test_flipped_byte_names_the_segment() -> None:
    blob = bytearray(encrypt(os.urandom(3 * S + 10)))
    bad = HEADER_SIZE + 2 * (S + SEGMENT_OVERHEAD) + 20
    blob[bad] ^= 0x80
    with pytest.raises(IntegrityError, match="segment 2") as info:
        decrypt(bytes(blob))
    assert info.value.segment == 2
    with pytest.raises(IntegrityError, match="segment 2"):
        reader(bytes(blob)).read(2 * S, 2 * S + 1)
    # Other segments are still readable through random access.
    r = reader(bytes(blob))
    assert len(r.read(0, S)) == S


def test_swapped_segments_are_detected() -> None:
    header, segs = split_segments(encrypt(os.urandom(3 * S + 10)))
    segs[0], segs[1] = segs[1], segs[0]
    with pytest.raises(IntegrityError, match="segment 0"):
        decrypt(header + b"".join(segs))


def test_truncated_last_segment_is_detected() -> None:
    blob = encrypt(os.urandom(3 * S + 10))
    for cut in (1, 5, SEGMENT_OVERHEAD + 10):
        with pytest.raises(IntegrityError):
            decrypt(blob[:-cut])
        with pytest.raises(IntegrityError):
            reader(blob[:-cut]).read()


def test_dropped_final_segment_is_detected() -> None:
    header, segs = split_segments(encrypt(os.urandom(3 * S + 10)))
    truncated = header + b"".join(segs[:-1])
    with pytest.raises(IntegrityError, match="without a final segment"):
        decrypt(truncated)
    with pytest.raises(IntegrityError, match="no final segment"):
        reader(truncated)


def test_dropped_final_segment_of_aligned_object_is_detected() -> None:
    # An S-aligned object ends with an empty final segment; dropping it must not pass.
    header, segs = split_segments(encrypt(os.urandom(2 * S)))
    assert len(segs[-1]) == SEGMENT_OVERHEAD
    with pytest.raises(IntegrityError):
        decrypt(header + b"".join(segs[:-1]))


def test_appended_segment_is_detected() -> None:
    header, segs = split_segments(encrypt(os.urandom(3 * S + 10)))
    for extra in (segs[0], segs[-1], b"x"):
        blob = header + b"".join(segs) + extra
        with pytest.raises(IntegrityError):
            decrypt(blob)
        with pytest.raises(IntegrityError):
            reader(blob).read()
        with pytest.raises(IntegrityError):  # even a short range checks the length first
            reader(blob).read(0, 1)


def test_final_segment_made_inner_by_appending_is_detected() -> None:
    # Drop the final segment and put in the final segment of another object.
    header, segs = split_segments(encrypt(os.urandom(2 * S)))
    _other_header, other = split_segments(encrypt(os.urandom(5)))
    with pytest.raises(IntegrityError):
        decrypt(header + b"".join(segs[:-1]) + other[-1])


def test_segment_spliced_from_another_object_with_the_same_key() -> None:
    h1, a = split_segments(encrypt(os.urandom(3 * S + 10), oid=b"object-a"))
    _, b = split_segments(encrypt(os.urandom(3 * S + 10), oid=b"object-b"))
    a[1] = b[1]  # same key, same index, same size: only the object id differs
    with pytest.raises(IntegrityError, match="segment 1"):
        decrypt(h1 + b"".join(a), oid=b"object-a")


def test_wrong_key_or_object_id_fails() -> None:
    blob = encrypt(b"secret")
    with pytest.raises(IntegrityError):
        decrypt(blob, key=os.urandom(32))
    with pytest.raises(IntegrityError):
        decrypt(blob, oid=b"other")


def test_header_segment_size_is_authenticated() -> None:
    plain = os.urandom(4 * 32)
    blob = bytearray(encrypt(plain, 64))
    # Claim 32-byte segments: the layout no longer parses or the tags fail.
    blob[:HEADER_SIZE] = header_bytes(32)
    with pytest.raises(IntegrityError):
        decrypt(bytes(blob))
    with pytest.raises(IntegrityError):
        reader(bytes(encrypt(plain, 64)), segment_size=32).read()


def test_bad_magic_and_version() -> None:
    blob = bytearray(encrypt(b"abc"))
    blob[0:4] = b"NOPE"
    with pytest.raises(UnsupportedFormatError, match="magic"):
        decrypt(bytes(blob))
    blob = bytearray(encrypt(b"abc"))
    blob[4] = 99
    with pytest.raises(UnsupportedFormatError, match="version 99"):
        decrypt(bytes(blob))


def test_short_read_is_reported() -> None:
    blob = encrypt(os.urandom(3 * S))
    r = SegmentReader(KEY, OID, lambda a, b: blob[a : b - 1], len(blob), segment_size=S)
    with pytest.raises(IntegrityError, match="short read"):
        r.read(0, 10)


# -- resumption ----------------------------------------------------------------------------


def test_resume_from_persisted_segments_and_checkpoint() -> None:
    data = os.urandom(5 * S + 17)
    w = SegmentWriter(KEY, OID, S)
    stored = w.write(data[: 2 * S + 9])  # two whole segments persisted
    tail = w.checkpoint()  # 9 buffered bytes sealed for durable storage
    assert w.buffered == 9
    # ...process dies; another one continues from the stored bytes and the tail:
    prefix = b"".join(stored)
    w2 = SegmentWriter.resume(
        KEY,
        OID,
        segment_size=S,
        stored_bytes=len(prefix),
        persisted=[prefix],
        tail=tail,
        expected_length=2 * S + 9,
    )
    assert w2.plaintext_length == 2 * S + 9
    assert w2.segments_emitted == 2
    assert w2.bytes_emitted == len(prefix)
    assert w2.sha256_known
    assert not w2.discarded_tail
    stored += w2.write(data[2 * S + 9 :])
    stored.append(w2.finish())
    blob = b"".join(stored)
    assert decrypt(blob) == data
    assert w2.sha256_hex() == hashlib.sha256(data).hexdigest()


def test_resume_without_stored_bytes_defers_the_hash() -> None:
    data = os.urandom(4 * S + 3)
    w = SegmentWriter(KEY, OID, S)
    stored = w.write(data[: 3 * S + 1])
    tail = w.checkpoint()
    w2 = SegmentWriter.resume(
        KEY, OID, segment_size=S, stored_bytes=len(b"".join(stored)), tail=tail
    )
    assert not w2.sha256_known
    assert w2.plaintext_length == 3 * S + 1
    stored += w2.write(data[3 * S + 1 :])
    stored.append(w2.finish())
    with pytest.raises(RuntimeError, match="plaintext_sha256"):
        w2.sha256_hex()
    blob = b"".join(stored)
    assert plaintext_sha256(KEY, OID, [blob]) == (hashlib.sha256(data).hexdigest(), len(data))


def test_a_writer_made_without_hashing_keeps_no_sha256() -> None:
    data = os.urandom(2 * S + 5)
    w = SegmentWriter(KEY, OID, S, hashed=False)
    assert not w.sha256_known
    blob = b"".join([*w.write(data), w.finish()])
    with pytest.raises(RuntimeError, match="hashed=False"):
        w.sha256_hex()
    assert decrypt(blob) == data  # the same stream as a hashing writer's


def test_stale_tail_is_discarded() -> None:
    data = os.urandom(3 * S)
    w = SegmentWriter(KEY, OID, S)
    stored = w.write(data[:10])
    old_tail = w.checkpoint()  # at segment 0
    stored += w.write(data[10 : 2 * S + 5])  # two segments stored, then a crash
    prefix = b"".join(stored)
    w2 = SegmentWriter.resume(
        KEY, OID, segment_size=S, stored_bytes=len(prefix), persisted=[prefix], tail=old_tail
    )
    assert w2.discarded_tail
    assert w2.plaintext_length == 2 * S  # the client resends from here
    stored += w2.write(data[2 * S :])
    stored.append(w2.finish())
    assert decrypt(b"".join(stored)) == data
    assert w2.sha256_hex() == hashlib.sha256(data).hexdigest()


def test_resume_from_nothing() -> None:
    w = SegmentWriter(KEY, OID, S)
    w.write(b"abc")
    tail = w.checkpoint()
    w2 = SegmentWriter.resume(KEY, OID, segment_size=S, stored_bytes=0, persisted=[], tail=tail)
    out = [*w2.write(b"d" * S), w2.finish()]
    assert decrypt(b"".join(out)) == b"abc" + b"d" * S
    assert w2.sha256_hex() == hashlib.sha256(b"abc" + b"d" * S).hexdigest()
    w3 = SegmentWriter.resume(KEY, OID, segment_size=S, stored_bytes=0)
    assert decrypt(w3.finish()) == b""


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(max_size=500),
    cut=st.integers(0, 500),
    segment_size=st.integers(1, 64),
    reread=st.booleans(),
)
def test_resume_at_any_point(data: bytes, cut: int, segment_size: int, reread: bool) -> None:
    cut = min(cut, len(data))
    w = SegmentWriter(KEY, OID, segment_size)
    stored = w.write(data[:cut])
    tail = w.checkpoint()
    persisted = b"".join(stored)
    w2 = SegmentWriter.resume(
        KEY,
        OID,
        segment_size=segment_size,
        stored_bytes=len(persisted),
        persisted=[persisted[i : i + 5] for i in range(0, len(persisted), 5)] if reread else None,
        tail=tail,
        expected_length=cut,
    )
    stored += w2.write(data[cut:])
    stored.append(w2.finish())
    blob = b"".join(stored)
    assert decrypt(blob) == data
    digest = hashlib.sha256(data).hexdigest()
    if reread:
        assert w2.sha256_hex() == digest
    assert plaintext_sha256(KEY, OID, [blob], segment_size=segment_size) == (digest, len(data))


def test_resume_rejects_tampered_prefix_and_mismatches() -> None:
    w = SegmentWriter(KEY, OID, S)
    persisted = bytearray(b"".join(w.write(os.urandom(3 * S + 1))))
    tail = w.checkpoint()
    good = bytes(persisted)
    n = len(good)
    persisted[HEADER_SIZE + S + SEGMENT_OVERHEAD + 3] ^= 1
    with pytest.raises(IntegrityError, match="segment 1"):
        SegmentWriter.resume(
            KEY, OID, segment_size=S, stored_bytes=n, persisted=[bytes(persisted)], tail=tail
        )
    with pytest.raises(IntegrityError, match="expected"):
        SegmentWriter.resume(
            KEY, OID, segment_size=S, stored_bytes=n, tail=tail, expected_length=3 * S
        )
    with pytest.raises(IntegrityError, match="whole segments"):
        SegmentWriter.resume(KEY, OID, segment_size=S, stored_bytes=n - 1)
    with pytest.raises(IntegrityError, match="inside segment"):
        SegmentWriter.resume(KEY, OID, segment_size=S, stored_bytes=n, persisted=[good[:-1]])
    with pytest.raises(IntegrityError, match="segment size"):
        SegmentWriter.resume(
            KEY,
            OID,
            segment_size=S // 2,
            stored_bytes=HEADER_SIZE + 2 * (S // 2 + SEGMENT_OVERHEAD),
            persisted=[good],
        )
    # A tail ahead of the stored segments, a forged one, or another object's, is refused.
    with pytest.raises(IntegrityError, match="only 2 segments"):
        SegmentWriter.resume(
            KEY, OID, segment_size=S, stored_bytes=n - S - SEGMENT_OVERHEAD, tail=tail
        )
    forged = bytearray(tail)
    forged[-1] ^= 1
    with pytest.raises(IntegrityError, match="tail 3"):
        SegmentWriter.resume(KEY, OID, segment_size=S, stored_bytes=n, tail=bytes(forged))
    other = SegmentWriter(KEY, b"other", S)
    other.write(os.urandom(3 * S + 1))
    with pytest.raises(IntegrityError, match="tail 3"):
        SegmentWriter.resume(KEY, OID, segment_size=S, stored_bytes=n, tail=other.checkpoint())


def test_writer_misuse() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SegmentWriter(b"short", OID)
    with pytest.raises(ValueError, match="segment_size"):
        SegmentWriter(KEY, OID, 0)
    w = SegmentWriter(KEY, OID, S)
    with pytest.raises(RuntimeError):
        w.sha256_hex()
    w.finish()
    with pytest.raises(RuntimeError):
        w.write(b"x")
    with pytest.raises(RuntimeError):
        w.finish()


def test_size_helpers() -> None:
    assert encrypted_size(0, 10) == HEADER_SIZE + SEGMENT_OVERHEAD
    assert encrypted_size(10, 10) == HEADER_SIZE + 10 + 2 * SEGMENT_OVERHEAD
    for n in range(0, 50):
        assert plaintext_size(encrypted_size(n, 7), 7) == n
    with pytest.raises(IntegrityError):
        plaintext_size(HEADER_SIZE + 7 + SEGMENT_OVERHEAD, 7)  # ends on a full segment
    span = ciphertext_span(5, 15, 30, 10)
    assert (span.first_segment, span.last_segment, span.skip, span.length) == (0, 1, 5, 10)
    assert span.start == HEADER_SIZE
    assert span.end == HEADER_SIZE + 2 * (10 + SEGMENT_OVERHEAD)
