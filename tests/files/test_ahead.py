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

from hvelv.files import ahead
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
    the producer closes its source when its read returns (with the loop still running)."""
    reading = threading.Event()
    release = threading.Event()
    closed = threading.Event()
    producers: list[threading.Thread] = []

    def chunks() -> Iterator[bytes]:
        producers.append(threading.current_thread())
        try:
            yield b"first"
            reading.set()
            release.wait(10)  # a read that hangs
            yield b"second"
            yield b"third"
        finally:
            closed.set()

    async def consume() -> tuple[bytes, float, bool]:
        stream = stream_ahead(chunks(), 1)
        first = await anext(stream)
        assert await asyncio.to_thread(reading.wait, 10)
        started = time.perf_counter()
        await stream.aclose()
        waited = time.perf_counter() - started
        closed_early = closed.is_set()
        release.set()
        assert await asyncio.to_thread(closed.wait, 10)
        await asyncio.to_thread(producers[0].join, 10)
        return first, waited, closed_early

    first, waited, closed_early = asyncio.run(consume())
    assert first == b"first"
    assert not closed_early  # still in its read: nobody joined it
    assert waited < 5  # a bound far from the 10 s hang, not a speed figure
    assert not producers[0].is_alive()


@pytest.mark.parametrize("depth", [1, 2])
def test_the_producer_reads_at_most_depth_items_ahead(depth: int) -> None:
    produced: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(100):
            produced.append(i)
            yield bytes([i])

    async def consume() -> int:
        stream = stream_ahead(chunks(), depth)
        await anext(stream)  # the consumer holds item 0 and takes nothing more
        await asyncio.sleep(0.3)
        ahead = len(produced)
        await stream.aclose()
        return ahead

    # item 0, then ``depth`` more being read or waiting (fewer on a slow machine)
    assert asyncio.run(consume()) <= 1 + depth


def _names_of_producing_threads(streams: int) -> list[str]:
    names: list[str] = []

    def chunks() -> Iterator[bytes]:
        names.append(threading.current_thread().name)
        yield b"x"

    def producers_ended() -> None:
        for thread in threading.enumerate():
            if thread.name == "read-ahead":
                thread.join(10)

    async def consume() -> None:
        for _ in range(streams):
            assert [chunk async for chunk in stream_ahead(chunks(), 1)] == [b"x"]
            await asyncio.to_thread(producers_ended)  # it gives the thread back as it ends

    asyncio.run(consume())
    return names


def test_beyond_the_thread_limit_a_stream_reads_in_the_thread_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ahead, "_stream_threads", threading.BoundedSemaphore(1))
    ahead._stream_threads.acquire()  # the one thread is busy with another download
    names = _names_of_producing_threads(2)
    assert "read-ahead" not in names


def test_a_finished_stream_gives_its_thread_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ahead, "_stream_threads", threading.BoundedSemaphore(1))
    # one thread allowed: every stream gets it only if the one before gave it back
    assert _names_of_producing_threads(3) == ["read-ahead"] * 3


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        list(read_ahead(iter([b"a"]), 0))
