"""Throughput of the AES-256-GCM segment format against plain hashing and copying.

    PYTHONPATH=src python bench/segments.py [--mib 512] [--segment-mib 4]

Prints MB/s for: memcpy (into a reused buffer), SHA-256, segment encryption (incl. the running
SHA-256 the writer keeps), and segment decryption (sequential and via SegmentReader).
One run, same buffer, same process; a sanity check, not a goal.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable

from hvelv.crypto.segments import SegmentReader, SegmentWriter, decrypt_stream

MiB = 1024 * 1024


def measure(label: str, nbytes: int, fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    rate = nbytes / best / 1e6
    print(f"{label:<34} {rate:9.0f} MB/s  ({best * 1000:.0f} ms for {nbytes / MiB:.0f} MiB)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="plaintext size in MiB")
    parser.add_argument("--segment-mib", type=int, default=4, help="segment size in MiB")
    args = parser.parse_args()
    size, seg = args.mib * MiB, args.segment_mib * MiB
    data = os.urandom(size)
    key, oid = os.urandom(32), b"bench-object"
    chunk = 256 * 1024  # roughly what an ASGI server hands over per receive()

    target = bytearray(seg)
    source = memoryview(data)

    def memcpy() -> None:
        for i in range(0, size, seg):
            piece = source[i : i + seg]
            target[: len(piece)] = piece

    def sha256() -> None:
        hashlib.sha256(data).digest()

    stored: list[bytes] = []

    def encrypt() -> None:
        stored.clear()
        writer = SegmentWriter(key, oid, seg)
        view = memoryview(data)
        for i in range(0, size, chunk):
            stored.extend(writer.write(view[i : i + chunk]))
        stored.append(writer.finish())
        writer.sha256_hex()

    def decrypt() -> None:
        for _ in decrypt_stream(key, oid, stored):
            pass

    print(f"plaintext {args.mib} MiB, segment {args.segment_mib} MiB, write chunk 256 KiB")
    base = measure("memcpy (into a reused buffer)", size, memcpy)
    sha = measure("hashlib.sha256", size, sha256)
    enc = measure("SegmentWriter (AES-GCM + SHA-256)", size, encrypt)
    blob = b"".join(stored)
    dec = measure("decrypt_stream", size, decrypt)

    def ranged() -> None:
        reader = SegmentReader(key, oid, lambda a, b: blob[a:b], len(blob), segment_size=seg)
        for _ in reader.iter_range():
            pass

    rng = measure("SegmentReader.iter_range (all)", size, ranged)
    print(f"encrypt_vs_sha256 {enc / sha:.2f}")
    print(f"decrypt_vs_sha256 {dec / sha:.2f}")
    print(f"reader_vs_memcpy {rng / base:.2f}")


if __name__ == "__main__":
    main()
