"""Query limits, engine settings and the deadline of one query (no DuckDB import here).

:class:`QueryLimits` and :class:`EngineSettings` come from the instance settings
(``HVELV_QUERY_*``, ``HVELV_DATASET_CACHE_MB``; :meth:`from_settings`). A :class:`Deadline` is
the time limit of one query, counted from the moment the engine receives it: waiting for the
use's lock, decrypting a version into memory, building the use's working copy and running the SQL
all count. When it passes, the DuckDB statements it watches are interrupted; code between
statements checks it with :meth:`Deadline.check`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hvelv.datasets.errors import QueryLimitExceeded

if TYPE_CHECKING:
    from hvelv.config import Settings

__all__ = ["Deadline", "EngineSettings", "QueryLimits"]


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_rows: int = 100_000
    max_bytes: int = 64 << 20
    timeout_s: float = 30.0
    page_rows: int = 10_000  # largest JSON page

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        return cls(
            max_rows=settings.query_max_rows,
            max_bytes=settings.query_max_bytes,
            timeout_s=settings.query_timeout_seconds,
            page_rows=settings.query_page_max_rows,
        )


@dataclass(frozen=True, slots=True)
class EngineSettings:
    memory_limit: str = "4GB"  # per use database
    threads: int = 2
    max_uses: int = 8  # use databases kept (least recently used closed first)
    base_cache_bytes: int = 4 << 30  # decrypted versions kept in memory
    rebuild_fraction: float = 0.05
    batch_rows: int = 65_536
    loader_threads: int = 1  # decrypting loads of versions running at once, per project
    #: after an ingest, the working copies of at most this many uses already reading the
    #: dataset are rebuilt for the new version (most recently used first; see QueryEngine.warm)
    warm_uses: int = 4

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineSettings:
        return cls(
            memory_limit=f"{settings.query_memory_mb}MB",
            threads=settings.query_threads,
            max_uses=settings.query_max_uses,
            base_cache_bytes=settings.dataset_cache_mb << 20,
        )


class Interruptible(Protocol):
    def interrupt(self) -> None: ...


class Deadline:
    """The time limit of one query (see the module docstring). Use as a context manager."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._fired = threading.Event()
        self._lock = threading.Lock()
        self._watched: list[Interruptible] = []
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def fire(self) -> None:
        """Pass the deadline now: interrupt the watched statements (e.g. a warm-up build
        that a query wants the database for)."""
        self._timer.cancel()
        self._fire()

    def _fire(self) -> None:
        with self._lock:
            self._fired.set()
            for con in self._watched:
                con.interrupt()

    @property
    def fired(self) -> bool:
        """True once the watched statements were interrupted."""
        return self._fired.is_set()

    @property
    def expired(self) -> bool:
        return self._fired.is_set() or time.monotonic() >= self._end

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def exceeded(self) -> QueryLimitExceeded:
        return QueryLimitExceeded(
            "time", self.seconds, f"the query ran longer than {self.seconds:g} s"
        )

    def check(self) -> None:
        """Raise the time limit error if the deadline has passed."""
        if self.expired:
            raise self.exceeded()

    @contextmanager
    def watching(self, con: Interruptible) -> Iterator[None]:
        """Interrupt ``con`` if the deadline passes while the block runs."""
        with self._lock:
            if self._fired.is_set():
                raise self.exceeded()
            self._watched.append(con)
        try:
            yield
        finally:
            with self._lock:
                if con in self._watched:  # unwatch() may have taken it already
                    self._watched.remove(con)

    def unwatch(self, con: Interruptible) -> None:
        """Interrupt ``con`` no more (before clean-up that must not be cut off: once this
        returns, no interrupt of this deadline is sent to it)."""
        with self._lock:
            self._watched = [c for c in self._watched if c is not con]

    def watches(self, con: Interruptible) -> bool:
        with self._lock:
            return any(c is con for c in self._watched)

    def cancel(self) -> None:
        self._timer.cancel()
