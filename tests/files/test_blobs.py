"""Reading ahead of a consumer in a thread of its own (used to hash stored files)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvelv.files.blobs import read_ahead


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
