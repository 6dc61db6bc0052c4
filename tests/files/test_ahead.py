"""Reading ahead of a consumer in a thread of its own: for hashing stored files
(``read_ahead``) and for streaming downloads from the event loop (``stream_ahead``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvelv.files.ahead import read_ahead, stream_ahead


@given(st.lists(st.binary(max_size=8), max_size=30), st.integers(min_value=1, max_value=4))
def test_every_item_in_order(items: list[bytes], depth: int) -> None:
    assert list(read_ahead(iter(items), depth)) == items


def test_an_error_of_the_producer_is_raised_after_the_items_before_it() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        raise OSError("disk gone")

    reader = read_ahead(chunks(), 1)
    assert [next(reader), next(reader)] == [b"a", b"b"]
    with pytest.raises(OSError, match="disk gone"):
        next(reader)


def test_stopping_early_stops_the_producer_and_closes_the_source() -> None:
    closed = threading.Event()
    produced: list[int] = []

    def chunks() -> Iterator[bytes]:
        try:
            for i in range(1000):
                produced.append(i)
                yield bytes([i % 256])
        finally:
            closed.set()

    reader = read_ahead(chunks(), 2)
    assert next(reader) == b"\x00"
    reader.close()  # joins the producer
    assert closed.is_set()
    assert len(produced) <= 5  # it stopped a few items ahead, not at the end
    assert not any(t.name == "read-ahead" for t in threading.enumerate())


# -- stream_ahead: the same producer, consumed on an event loop --------------------------------


async def _collect(chunks: Iterator[bytes], depth: int) -> list[bytes]:
    return [chunk async for chunk in stream_ahead(chunks, depth)]


@given(st.lists(st.binary(max_size=8), max_size=30), st.integers(min_value=1, max_value=4))
def test_stream_every_item_in_order(items: list[bytes], depth: int) -> None:
    assert asyncio.run(_collect(iter(items), depth)) == items


def test_stream_an_error_of_the_producer_is_raised_after_the_items_before_it() -> None:
    got: list[bytes] = []

    def chunks() -> Iterator[bytes]:
        yield b"a"
        raise OSError("disk gone")

    async def consume() -> None:
        async for chunk in stream_ahead(chunks(), 1):
            got.append(chunk)

    with pytest.raises(OSError, match="disk gone"):
        asyncio.run(consume())
    assert got == [b"a"]


def test_a_consumer_that_stops_does_not_wait_for_a_slow_producer() -> None:
    """A client that goes away while storage is slow: the event loop goes on at once, and
    the producer closes its source when its read returns."""
    release = threading.Event()
    closed = threading.Event()

    def chunks() -> Iterator[bytes]:
        try:
            yield b"first"
            release.wait(10)  # a read that hangs
            yield b"second"
            yield b"third"
        finally:
            closed.set()

    async def consume() -> tuple[bytes, float]:
        stream = stream_ahead(chunks(), 1)
        first = await anext(stream)
        started = time.perf_counter()
        await stream.aclose()
        return first, time.perf_counter() - started

    first, waited = asyncio.run(consume())
    assert first == b"first"
    assert not closed.is_set()  # still in its read: nobody joined it
    release.set()
    assert closed.wait(10)
    assert waited < 5  # a bound far from the 10 s hang, not a speed figure


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        list(read_ahead(iter([b"a"]), 0))
