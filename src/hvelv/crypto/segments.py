"""Streaming AES-256-GCM segment format for one stored object.

An object's plaintext is cut into segments of a fixed size ``S`` (recorded in the header).
Every segment but the last holds exactly ``S`` plaintext bytes; the last one ("final") holds
``0 <= n < S`` bytes, so a 0-byte object is a header plus one empty final segment and the
plaintext length follows from the stored length alone.

Stored layout::

    header   = b"HVSG" | version (u8) | segment_size (u32, big endian)          9 bytes
    segment  = nonce (12 bytes) | AES-GCM ciphertext | tag (16 bytes)           n + 28 bytes
    object   = header | segment 0 | segment 1 | ... | final segment

Associated data of every segment binds the header (format version and segment size), the
object id, the segment index and the segment kind (inner, final or checkpointed tail). So a
segment moved to another position, copied from another object encrypted under the same key,
a missing final segment (truncation), extra segments after the final one (appending), or a
changed segment size all fail authentication, and the error names the segment.

Nonces are 96 random bits per segment, stored in front of the segment. A counter nonce
(random prefix + index) would be as good for a write-once stream, but a resumable upload can
encrypt the same segment index more than once (a crash after a part was stored but before
that was recorded, then a client resending different bytes for the same offset; or the
checkpointed tail, which is re-encrypted as it grows). With a deterministic nonce that is
AES-GCM nonce reuse, which leaks the XOR of plaintexts and the authentication key. Random
nonces make every encryption independent for 12 bytes per segment (0.0003 % at 4 MiB). With
one fresh data key per object, the number of segments per key stays far below the 2**32
random-nonce limit (that would be a 16 PiB object at 4 MiB segments).

Resumption: a writer is rebuilt at a segment boundary from the number of stored bytes
(:meth:`SegmentWriter.resume`); the encryption needs nothing else (random nonces, the index
follows from the count). ``hashlib`` cannot serialise a SHA-256 state, so the hash is always
recomputed by decrypting stored data, never assembled from per-segment hashes: the figure
users compare is the SHA-256 of the whole plaintext, which per-segment hashes cannot give
without a full pass anyway, and decrypting authenticates every stored segment on the way.
If the caller can read the stored prefix (local disk) it passes it to ``resume`` and the
hash continues; if not (S3 will not return parts of an unfinished multipart upload) the
resumed writer has no hash and the caller computes it once from the completed object with
:func:`plaintext_sha256`. Either way the cost, one sequential decrypt, is paid only when an
upload continues in a process that no longer holds the live writer (callers may keep
writers in memory as a cache). A partial segment still in the writer's buffer can be sealed
with :meth:`SegmentWriter.checkpoint`, stored as a small object of its own, and handed back
to ``resume``, so an acknowledged offset need not be segment aligned.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAX_SEGMENT_SIZE",
    "NONCE_SIZE",
    "SEGMENT_OVERHEAD",
    "TAG_SIZE",
    "CiphertextSpan",
    "IntegrityError",
    "SegmentReader",
    "SegmentWriter",
    "UnsupportedFormatError",
    "ciphertext_span",
    "decrypt_stream",
    "encrypt_bytes",
    "encrypted_size",
    "header_bytes",
    "parse_header",
    "plaintext_sha256",
    "plaintext_size",
]

MAGIC: Final = b"HVSG"
FORMAT_VERSION: Final = 1
_HEADER = struct.Struct(">4sBI")
HEADER_SIZE: Final = _HEADER.size
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
SEGMENT_OVERHEAD: Final = NONCE_SIZE + TAG_SIZE
DEFAULT_SEGMENT_SIZE: Final = 4 * 1024 * 1024
MAX_SEGMENT_SIZE: Final = 1024 * 1024 * 1024
KEY_SIZE: Final = 32
MAX_OBJECT_ID: Final = 0xFFFF

_AAD_PREFIX: Final = b"hvelv/segment\x00"
_KIND_INNER: Final = 0
_KIND_FINAL: Final = 1
_KIND_TAIL: Final = 2
_AAD_TAIL = struct.Struct(">QB")
_TAIL_INDEX = struct.Struct(">Q")


class IntegrityError(ValueError):
    """The stored bytes are not an authentic segment stream for this key and object.

    ``segment`` names the failing segment (``None`` for header or length problems).
    """

    def __init__(self, message: str, segment: int | None = None) -> None:
        super().__init__(message)
        self.segment = segment


class UnsupportedFormatError(IntegrityError):
    """The header carries an unknown magic or format version."""


def _check_segment_size(segment_size: int) -> None:
    if not 1 <= segment_size <= MAX_SEGMENT_SIZE:
        raise ValueError(f"segment_size must be in [1, {MAX_SEGMENT_SIZE}], got {segment_size}")


def header_bytes(segment_size: int) -> bytes:
    """The header for a stream with the given segment size."""
    _check_segment_size(segment_size)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, segment_size)


def parse_header(data: bytes) -> int:
    """Validate a header and return its segment size."""
    if len(data) < HEADER_SIZE:
        raise IntegrityError(f"header truncated: {len(data)} of {HEADER_SIZE} bytes")
    magic, version, segment_size = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise UnsupportedFormatError("not an encrypted segment stream (bad magic)")
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(f"unsupported segment format version {version}")
    if not 1 <= segment_size <= MAX_SEGMENT_SIZE:
        raise IntegrityError(f"invalid segment size {segment_size} in header")
    return int(segment_size)


def encrypted_size(plaintext_len: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Stored size of a ``plaintext_len``-byte object."""
    _check_segment_size(segment_size)
    if plaintext_len < 0:
        raise ValueError("plaintext_len must be >= 0")
    full, rest = divmod(plaintext_len, segment_size)
    return HEADER_SIZE + full * (segment_size + SEGMENT_OVERHEAD) + rest + SEGMENT_OVERHEAD


def plaintext_size(stored_len: int, segment_size: int) -> int:
    """Plaintext length of a stored object of ``stored_len`` bytes; raises if impossible."""
    _check_segment_size(segment_size)
    body = stored_len - HEADER_SIZE
    if body < SEGMENT_OVERHEAD:
        raise IntegrityError(f"object of {stored_len} bytes is too short to hold a final segment")
    full, rest = divmod(body, segment_size + SEGMENT_OVERHEAD)
    if rest < SEGMENT_OVERHEAD:
        # Ends on a full-segment boundary (or inside a nonce): the final segment is missing.
        raise IntegrityError(
            f"object of {stored_len} bytes has no final segment (truncated)", segment=full
        )
    return full * segment_size + rest - SEGMENT_OVERHEAD


@dataclass(frozen=True, slots=True)
class CiphertextSpan:
    """Which stored bytes cover a plaintext range.

    Segments ``first_segment .. last_segment`` (inclusive) occupy stored bytes
    ``[start, end)``; after decrypting them, drop ``skip`` leading plaintext bytes and keep
    ``length`` bytes.
    """

    first_segment: int
    last_segment: int
    start: int
    end: int
    skip: int
    length: int


def _segment_offset(index: int, segment_size: int) -> int:
    return HEADER_SIZE + index * (segment_size + SEGMENT_OVERHEAD)


def ciphertext_span(start: int, end: int, plaintext_len: int, segment_size: int) -> CiphertextSpan:
    """Map plaintext ``[start, end)`` of an object of ``plaintext_len`` bytes to stored bytes.

    An empty range maps to no segments (``first_segment > last_segment``).
    """
    _check_segment_size(segment_size)
    if not 0 <= start <= end <= plaintext_len:
        raise ValueError(f"range [{start}, {end}) outside object of {plaintext_len} bytes")
    if start == end:
        return CiphertextSpan(0, -1, HEADER_SIZE, HEADER_SIZE, 0, 0)
    last_index = plaintext_len // segment_size  # index of the final segment
    first = start // segment_size
    last = (end - 1) // segment_size
    seg_end = _segment_offset(last, segment_size)
    if last == last_index:
        seg_end += plaintext_len - last_index * segment_size + SEGMENT_OVERHEAD
    else:
        seg_end += segment_size + SEGMENT_OVERHEAD
    return CiphertextSpan(
        first_segment=first,
        last_segment=last,
        start=_segment_offset(first, segment_size),
        end=seg_end,
        skip=start - first * segment_size,
        length=end - start,
    )


class _Cipher:
    """AES-GCM bound to one object: builds associated data and names failing segments."""

    def __init__(self, key: bytes, object_id: bytes, segment_size: int) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"data key must be {KEY_SIZE} bytes (AES-256), got {len(key)}")
        if len(object_id) > MAX_OBJECT_ID:
            raise ValueError(f"object_id longer than {MAX_OBJECT_ID} bytes")
        self.segment_size = segment_size
        self.header = header_bytes(segment_size)
        self._aead = AESGCM(bytes(key))
        self._aad_prefix = (
            _AAD_PREFIX + self.header + struct.pack(">H", len(object_id)) + bytes(object_id)
        )

    def _aad(self, index: int, kind: int) -> bytes:
        return self._aad_prefix + _AAD_TAIL.pack(index, kind)

    def seal(
        self, index: int, kind: int, plaintext: bytes | bytearray | memoryview, prefix: bytes = b""
    ) -> bytearray:
        """``prefix | nonce | ciphertext | tag`` in one fresh buffer (no extra copies)."""
        nonce = os.urandom(NONCE_SIZE)
        start = len(prefix) + NONCE_SIZE
        out = bytearray(start + len(plaintext) + TAG_SIZE)
        out[: len(prefix)] = prefix
        out[len(prefix) : start] = nonce
        with memoryview(out) as view:
            self._aead.encrypt_into(nonce, plaintext, self._aad(index, kind), view[start:])
        return out

    def open(self, index: int, kind: int, blob: bytes | bytearray | memoryview) -> bytes:
        if len(blob) < SEGMENT_OVERHEAD:
            raise IntegrityError(f"segment {index} truncated ({len(blob)} bytes)", segment=index)
        view = memoryview(blob)
        try:
            return self._aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], self._aad(index, kind))
        except InvalidTag:
            what = {_KIND_INNER: "segment", _KIND_FINAL: "final segment", _KIND_TAIL: "tail"}
            raise IntegrityError(
                f"{what[kind]} {index} failed authentication (tampered, moved, truncated, "
                "from another object, or wrong key)",
                segment=index,
            ) from None


class SegmentWriter:
    """Encrypt one object as a stream of segments, buffering at most one segment.

    ``write`` returns the completed encrypted segments, one ``bytearray`` per segment (the
    first one prefixed with the header), ready to be persisted in order, e.g. one per
    multipart part. ``finish`` returns the final segment. Concatenating everything returned
    gives the stored object.
    """

    def __init__(
        self,
        key: bytes,
        object_id: bytes,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        *,
        hashed: bool = True,
    ) -> None:
        """``hashed=False``: no SHA-256 of the plaintext is kept (:attr:`sha256_known` False),
        for data whose hash is computed elsewhere or not needed."""
        _check_segment_size(segment_size)
        self._cipher = _Cipher(key, object_id, segment_size)
        self._segment_size = segment_size
        self._buffer = bytearray()  # reused: only the first _fill bytes are pending
        self._fill = 0
        self._index = 0
        self._header_pending = True
        self._hash: Any = hashlib.sha256() if hashed else None  # None: not hashed (resume())
        self._length = 0
        self.discarded_tail = False
        self._emitted = 0
        self._finished = False

    @classmethod
    def resume(
        cls,
        key: bytes,
        object_id: bytes,
        *,
        segment_size: int,
        stored_bytes: int,
        persisted: Iterable[bytes] | None = None,
        tail: bytes | None = None,
        expected_length: int | None = None,
    ) -> SegmentWriter:
        """Rebuild a writer after ``stored_bytes`` of its output were stored durably.

        ``stored_bytes`` (e.g. the sum of the stored part sizes) must be 0 or the header
        plus whole segments. If ``persisted`` is given it must yield exactly those stored
        bytes (in any chunking): every segment is then authenticated and hashed again, so
        :meth:`sha256_hex` stays available. Without it (S3 cannot read the parts of an
        unfinished multipart upload) the writer carries on but cannot know the hash:
        compute it from the completed object with :func:`plaintext_sha256`, which also
        authenticates every segment.

        ``tail`` is the latest :meth:`checkpoint` blob. A tail older than the stored
        segments (a crash between storing segments and storing the new tail) is dropped
        and :attr:`discarded_tail` is set; the resumed length then excludes it. A tail
        ahead of them, or not authentic, raises :class:`IntegrityError`.
        ``expected_length`` is the plaintext length the caller recorded, checked last.
        """
        writer = cls(key, object_id, segment_size)
        full = segment_size + SEGMENT_OVERHEAD
        if stored_bytes == 0:
            segments = 0
        else:
            segments, rest = divmod(stored_bytes - HEADER_SIZE, full)
            if stored_bytes < HEADER_SIZE + full or rest:
                raise IntegrityError(
                    f"{stored_bytes} stored bytes are not a header plus whole segments"
                )
        if persisted is not None:
            seen = 0

            def counted() -> Iterator[bytes]:
                nonlocal seen
                for chunk in persisted:
                    seen += len(chunk)
                    yield chunk

            for plaintext in decrypt_stream(
                key, object_id, counted(), segment_size=segment_size, allow_unfinished=True
            ):
                writer._hash.update(plaintext)
            if seen != stored_bytes:
                raise IntegrityError(f"persisted stream has {seen} bytes, not {stored_bytes}")
        else:
            writer._hash = None
        writer._index = segments
        writer._length = segments * segment_size
        writer._header_pending = stored_bytes == 0
        writer._emitted = stored_bytes
        if tail is not None:
            writer._restore_tail(tail)
        if expected_length is not None and expected_length != writer._length:
            raise IntegrityError(
                f"stored data holds {writer._length} plaintext bytes, expected {expected_length}"
            )
        return writer

    def _restore_tail(self, tail: bytes) -> None:
        if len(tail) < _TAIL_INDEX.size:
            raise IntegrityError("checkpointed tail truncated", self._index)
        (index,) = _TAIL_INDEX.unpack_from(tail)
        if index < self._index:
            self.discarded_tail = True
            return
        if index > self._index:
            raise IntegrityError(
                f"checkpointed tail is for segment {index} but only {self._index} segments "
                "are stored",
                self._index,
            )
        restored = self._cipher.open(index, _KIND_TAIL, memoryview(tail)[_TAIL_INDEX.size :])
        if len(restored) >= self._segment_size:
            raise IntegrityError("checkpointed tail longer than a segment", index)
        self._buffer[: len(restored)] = restored
        self._fill = len(restored)
        if self._hash is not None:
            self._hash.update(restored)
        self._length += len(restored)

    @property
    def segment_size(self) -> int:
        return self._segment_size

    @property
    def plaintext_length(self) -> int:
        """Plaintext bytes accepted so far (persisted segments plus the buffer)."""
        return self._length

    @property
    def segments_emitted(self) -> int:
        """Number of whole segments returned by ``write`` (the final one not counted)."""
        return self._index

    @property
    def bytes_emitted(self) -> int:
        """Stored bytes returned so far (header included)."""
        return self._emitted

    @property
    def buffered(self) -> int:
        """Plaintext bytes held in the buffer, not yet in any returned segment."""
        return self._fill

    @property
    def finished(self) -> bool:
        return self._finished

    def _emit(self, kind: int, plaintext: bytes | bytearray | memoryview) -> bytearray:
        prefix = b""
        if self._header_pending:
            prefix = self._cipher.header
            self._header_pending = False
        sealed = self._cipher.seal(self._index, kind, plaintext, prefix)
        self._emitted += len(sealed)
        return sealed

    def _emit_buffer(self, kind: int) -> bytearray:
        with memoryview(self._buffer) as view:
            sealed = self._emit(kind, view[: self._fill])
        self._fill = 0
        return sealed

    def write(self, data: bytes | bytearray | memoryview) -> list[bytearray]:
        """Add plaintext; return the encrypted segments completed by it (maybe none)."""
        if self._finished:
            raise RuntimeError("write() after finish()")
        out: list[bytearray] = []
        size = self._segment_size
        with memoryview(data) as whole:
            view = whole.cast("B") if whole.format != "B" or whole.ndim != 1 else whole
            if self._hash is not None:
                self._hash.update(view)
            self._length += len(view)
            if self._fill:
                take = min(size - self._fill, len(view))
                self._buffer[self._fill : self._fill + take] = view[:take]
                self._fill += take
                view = view[take:]
                if self._fill < size:
                    return out
                out.append(self._emit_buffer(_KIND_INNER))
                self._index += 1
            while len(view) >= size:
                out.append(self._emit(_KIND_INNER, view[:size]))
                self._index += 1
                view = view[size:]
            self._buffer[: len(view)] = view
            self._fill = len(view)
        return out

    def checkpoint(self) -> bytes:
        """Seal the buffered partial segment so it can be stored and passed to ``resume``.

        Layout: segment index (u64, also bound as associated data) | nonce | ciphertext |
        tag. The blob is bound to this object and to the current segment index and is
        encrypted under a fresh random nonce each time. It is not part of the stored object.
        """
        if self._finished:
            raise RuntimeError("checkpoint() after finish()")
        with memoryview(self._buffer) as view:
            sealed = self._cipher.seal(self._index, _KIND_TAIL, view[: self._fill])
        return _TAIL_INDEX.pack(self._index) + sealed

    def finish(self) -> bytearray:
        """Return the final segment (with the header too if nothing was returned before)."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        final = self._emit_buffer(_KIND_FINAL)
        self._buffer = bytearray()
        self._finished = True
        return final

    @property
    def sha256_known(self) -> bool:
        """False for a writer made with ``hashed=False`` or resumed without its stored bytes
        (see :meth:`resume`)."""
        return self._hash is not None

    def sha256_digest(self) -> bytes:
        """SHA-256 of the whole plaintext; only after ``finish``."""
        if not self._finished:
            raise RuntimeError("sha256 is only defined after finish()")
        if self._hash is None:
            raise RuntimeError(
                "this writer keeps no SHA-256 (made with hashed=False, or resumed without its "
                "stored bytes); use plaintext_sha256() on the completed object"
            )
        return bytes(self._hash.digest())

    def sha256_hex(self) -> str:
        return self.sha256_digest().hex()

    def sha256_state(self) -> Any:
        """A copy of the running SHA-256 of the whole plaintext (``hashlib`` object), to go
        on hashing what follows it elsewhere; only after ``finish``."""
        self.sha256_digest()  # the same preconditions
        return self._hash.copy()


def encrypt_bytes(
    key: bytes, object_id: bytes, data: bytes, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> bytes:
    """Encrypt a small object in one go (convenience for tests and metadata blobs)."""
    writer = SegmentWriter(key, object_id, segment_size)
    return b"".join([*writer.write(data), writer.finish()])


def decrypt_stream(
    key: bytes,
    object_id: bytes,
    chunks: Iterable[bytes],
    *,
    segment_size: int | None = None,
    allow_unfinished: bool = False,
) -> Iterator[bytes]:
    """Decrypt a whole stored object read sequentially, yielding plaintext per segment.

    Memory stays around one segment whatever the chunking. Raises :class:`IntegrityError`
    on a failed tag, a missing final segment or data after it. If ``segment_size`` is
    given, the header must announce that size. With ``allow_unfinished`` the stream must
    instead end on a segment boundary without a final segment (a stored upload prefix).
    """
    buf = bytearray()
    it = iter(chunks)
    exhausted = False

    def fill(n: int) -> None:
        nonlocal exhausted
        while len(buf) < n and not exhausted:
            try:
                buf.extend(next(it))
            except StopIteration:
                exhausted = True

    fill(HEADER_SIZE)
    if not buf and allow_unfinished:
        return
    found = parse_header(bytes(buf[:HEADER_SIZE]))
    if segment_size is not None and found != segment_size:
        raise IntegrityError(f"header announces segment size {found}, expected {segment_size}")
    cipher = _Cipher(key, object_id, found)
    del buf[:HEADER_SIZE]
    full = found + SEGMENT_OVERHEAD
    index = 0
    while True:
        # Need one byte beyond a full segment to know whether it is the final one.
        fill(full + 1)
        if len(buf) > full:
            yield cipher.open(index, _KIND_INNER, memoryview(buf)[:full])
            del buf[:full]
            index += 1
            continue
        if allow_unfinished:
            if len(buf) == full:
                yield cipher.open(index, _KIND_INNER, buf)
            elif buf:
                raise IntegrityError(
                    f"stored upload prefix ends inside segment {index}", segment=index
                )
            return
        if len(buf) == full or not buf:
            # A final segment is shorter than a full one and at least SEGMENT_OVERHEAD long.
            if buf:
                cipher.open(index, _KIND_INNER, buf)
                index += 1
            raise IntegrityError(
                f"stream ends before segment {index} without a final segment (truncated)",
                segment=index,
            )
        yield cipher.open(index, _KIND_FINAL, buf)
        return


def plaintext_sha256(
    key: bytes, object_id: bytes, chunks: Iterable[bytes], *, segment_size: int | None = None
) -> tuple[str, int]:
    """SHA-256 (hex) and length of a stored object's plaintext, authenticating every segment."""
    digest = hashlib.sha256()
    length = 0
    for plaintext in decrypt_stream(key, object_id, chunks, segment_size=segment_size):
        digest.update(plaintext)
        length += len(plaintext)
    return digest.hexdigest(), length


ReadRange = Callable[[int, int], bytes]
OpenRange = Callable[[int, int, int], Iterable[bytes]]


class SegmentReader:
    """Random access to the plaintext of a stored object, one segment in memory at a time.

    ``read_range(start, end)`` must return stored bytes ``[start, end)``; it is called once
    per segment. If ``open_range(start, end, chunk_size)`` is given too (an iterator of
    chunks, such as ``BlobStore.open_range``), :meth:`iter_range` fetches all covering
    segments with one call instead (one GET on S3) and still holds about one segment in
    memory. It asks for chunks of one stored segment: a chunk that is exactly a segment is
    decrypted as it is, without being copied into a buffer first.
    ``stored_size`` is the stored object's length. If the caller recorded the segment size
    it may pass it (saves reading the header); the header is authenticated through every
    segment anyway.
    """

    def __init__(
        self,
        key: bytes,
        object_id: bytes,
        read_range: ReadRange,
        stored_size: int,
        *,
        segment_size: int | None = None,
        open_range: OpenRange | None = None,
    ) -> None:
        self._read = read_range
        self._open = open_range
        self._stored_size = stored_size
        if segment_size is None:
            segment_size = parse_header(self._read_exact(0, HEADER_SIZE, None))
        self._cipher = _Cipher(key, object_id, segment_size)
        self._segment_size = segment_size
        self._plaintext_size = plaintext_size(stored_size, segment_size)
        self._last_index = self._plaintext_size // segment_size
        self._length_verified = False

    @property
    def segment_size(self) -> int:
        return self._segment_size

    @property
    def plaintext_size(self) -> int:
        return self._plaintext_size

    def _read_exact(self, start: int, end: int, segment: int | None) -> bytes:
        try:
            data = self._read(start, end)
        except ValueError as exc:  # the store's range check: the object is shorter
            raise IntegrityError(f"stored bytes [{start}, {end}): {exc}", segment=segment) from None
        if len(data) != end - start:
            raise IntegrityError(
                f"short read of stored bytes [{start}, {end}): got {len(data)}", segment=segment
            )
        return data

    def _segment(self, index: int) -> bytes:
        start = _segment_offset(index, self._segment_size)
        if index == self._last_index:
            end = self._stored_size
            kind = _KIND_FINAL
        else:
            end = start + self._segment_size + SEGMENT_OVERHEAD
            kind = _KIND_INNER
        plaintext = self._cipher.open(index, kind, self._read_exact(start, end, index))
        if kind == _KIND_FINAL:
            self._length_verified = True
        return plaintext

    def verify_length(self) -> None:
        """Authenticate the final segment, which proves the object's length."""
        if not self._length_verified:
            self._segment(self._last_index)

    def iter_range(
        self, start: int = 0, end: int | None = None, *, verify_length: bool = True
    ) -> Iterator[bytes]:
        """Yield plaintext ``[start, end)``, decrypting only the segments that cover it.

        With ``verify_length`` (the default) the final segment is authenticated first even
        when the range does not reach it, so a truncated or extended object is reported
        before any byte is returned, at the cost of reading one more segment.
        """
        if end is None:
            end = self._plaintext_size
        span = ciphertext_span(start, end, self._plaintext_size, self._segment_size)
        if verify_length and span.last_segment != self._last_index:
            self.verify_length()
        skip = span.skip
        remaining = span.length
        for plaintext in self._plaintexts(span):
            piece = plaintext[skip : skip + remaining]
            skip = 0
            remaining -= len(piece)
            if piece:
                yield piece

    def _plaintexts(self, span: CiphertextSpan) -> Iterator[bytes]:
        if self._open is None or span.first_segment == span.last_segment:
            for index in range(span.first_segment, span.last_segment + 1):
                yield self._segment(index)
            return
        full = self._segment_size + SEGMENT_OVERHEAD
        buf = bytearray()
        index = span.first_segment
        got = 0
        for chunk in self._open(span.start, span.end, full):
            got += len(chunk)
            if not buf and len(chunk) == full and index < self._last_index:
                yield self._cipher.open(index, _KIND_INNER, chunk)
                index += 1
                continue
            buf += chunk
            while index < self._last_index and len(buf) >= full:
                with memoryview(buf) as view:
                    plaintext = self._cipher.open(index, _KIND_INNER, view[:full])
                del buf[:full]
                index += 1
                yield plaintext
        if got != span.end - span.start:
            raise IntegrityError(
                f"short read of stored bytes [{span.start}, {span.end}): got {got}", index
            )
        if index <= span.last_segment:  # the final segment
            plaintext = self._cipher.open(index, _KIND_FINAL, buf)
            self._length_verified = True
            yield plaintext

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        """Plaintext ``[start, end)`` as one bytes object (for small ranges)."""
        return b"".join(self.iter_range(start, end))
