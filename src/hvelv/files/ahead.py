"""Producing the items of an iterator in a thread of its own, ahead of their consumer.

Reading and decrypting a stored file (system calls and AES-GCM, both without the GIL) then
overlaps with what the consumer does with the previous piece: hashing it
(:func:`read_ahead`) or sending it to a client from the event loop (:func:`stream_ahead`).
At most ``depth`` items are being read or wait between the two, so memory stays bounded.
An error of the producer reaches the consumer after the items before it; a consumer that
stops early stops the producer, which then closes the source iterator in its own thread
(the thread that iterated it, as a generator requires).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterator

from starlette.concurrency import iterate_in_threadpool

__all__ = ["MAX_STREAM_THREADS", "read_ahead", "stream_ahead"]

# Threads streaming downloads at once (each holds up to three segments); downloads beyond
# this many read in the shared thread pool instead, one segment at a time.
MAX_STREAM_THREADS = 32
_stream_threads = threading.BoundedSemaphore(MAX_STREAM_THREADS)


class _End:
    """Handed over after the last item."""


_END = _End()
Item = bytes | BaseException | _End


class _Producer:
    """A thread that hands ``chunks``' items to ``hand``, then ``_END`` or the error raised.

    It takes a slot before it reads an item and :meth:`taken` gives the slot back, so at
    most ``depth`` items are being read or wait to be taken: with ``depth`` 1, the item the
    consumer works on and the next one. A stopped producer reads nothing more.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        depth: int,
        hand: Callable[[Item], None],
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._chunks = chunks
        self._hand = hand
        self._on_exit = on_exit
        self._slots = threading.Semaphore(depth)
        self._stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _handed(self, item: Item) -> bool:
        try:
            self._hand(item)
        except Exception:  # the event loop closed under us: nobody is waiting any more
            return False
        return True

    def _run(self) -> None:
        try:
            while True:
                self._slots.acquire()
                if self._stopped.is_set():
                    return
                try:
                    chunk = next(self._chunks)
                except StopIteration:
                    self._handed(_END)
                    return
                except BaseException as exc:  # handed to the consumer, raised there
                    self._handed(exc)
                    return
                if not self._handed(chunk):
                    return
        finally:
            try:
                close = getattr(self._chunks, "close", None)
                if close is not None:
                    close()
            finally:
                if self._on_exit is not None:
                    self._on_exit()

    def taken(self) -> None:
        self._slots.release()

    def stop(self) -> None:
        """Stop producing: the thread ends after the item it is reading, if any."""
        self._stopped.set()
        self._slots.release()  # wakes a producer waiting for a slot


def _unpack(item: Item) -> bytes | None:
    if isinstance(item, _End):
        return None
    if isinstance(item, BaseException):
        raise item
    return item


def read_ahead(chunks: Iterator[bytes], depth: int) -> Generator[bytes, None, None]:
    """The items of ``chunks``, produced by a thread of their own up to ``depth`` ahead.

    Closing this iterator early stops the producer and waits for it to end.
    """
    ready: queue.SimpleQueue[Item] = queue.SimpleQueue()
    producer = _Producer(chunks, depth, ready.put)
    producer.start()
    try:
        while (chunk := _unpack(ready.get())) is not None:
            producer.taken()
            yield chunk
    finally:
        producer.stop()
        producer.thread.join()


async def stream_ahead(chunks: Iterator[bytes], depth: int) -> AsyncGenerator[bytes, None]:
    """The items of ``chunks`` for a consumer on the event loop, produced by a thread of
    their own up to ``depth`` ahead (no thread hop per item, unlike iterating a synchronous
    iterator in the thread pool).

    A consumer that stops (a client that went away) stops the producer without waiting for
    it: the event loop never blocks on a read from storage. At most
    :data:`MAX_STREAM_THREADS` such threads run at once; beyond that an iterator is read in
    the shared thread pool, one item at a time, as before.
    """
    if not _stream_threads.acquire(blocking=False):
        async for piece in iterate_in_threadpool(chunks):
            yield piece
        return
    loop = asyncio.get_running_loop()
    ready: asyncio.Queue[Item] = asyncio.Queue()

    def hand(item: Item) -> None:
        loop.call_soon_threadsafe(ready.put_nowait, item)

    producer = _Producer(chunks, depth, hand, on_exit=_stream_threads.release)
    try:
        producer.start()
    except BaseException:
        _stream_threads.release()
        raise
    try:
        while (chunk := _unpack(await ready.get())) is not None:
            producer.taken()
            yield chunk
    finally:
        producer.stop()
