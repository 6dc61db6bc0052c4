"""Per-process dataset runtime: query engines and participant key registries per project.

Both are accelerators rebuilt from the database and the blob store (API processes stay
stateless): the engines keep decrypted versions and consent-filtered working copies in memory,
the registries mirror the append-only ``dataset_participant_keys`` table.

DuckDB, pyarrow and sqlglot are imported on first use, not when the platform starts: a server
that never serves a dataset request keeps its memory (about 100 MB less).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, wait
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hvelv.datasets.limits import EngineSettings, QueryLimits
from hvelv.datasets.models import ParticipantKeyRow

if TYPE_CHECKING:
    from hvelv.config import Settings
    from hvelv.datasets.engine import QueryEngine
    from hvelv.datasets.ingest import DatasetVersion
    from hvelv.datasets.keys import ParticipantKeys

__all__ = ["DatasetRuntime"]

log = logging.getLogger("hvelv.datasets")


class DatasetRuntime:
    """Query engines and participant key registries per project (process-local caches)."""

    def __init__(
        self, settings: EngineSettings | None = None, limits: QueryLimits | None = None
    ) -> None:
        self._settings = settings
        self._limits = limits
        self._engines: dict[str, QueryEngine] = {}
        self._keys: dict[str, ParticipantKeys] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._ingest_locks: dict[str, threading.Lock] = {}
        self._warming: set[Future[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> DatasetRuntime:
        return cls(EngineSettings.from_settings(settings), QueryLimits.from_settings(settings))

    @property
    def settings(self) -> EngineSettings:
        if self._settings is None:
            self._settings = EngineSettings(memory_limit="1GB", max_uses=8)
        return self._settings

    @property
    def limits(self) -> QueryLimits:
        if self._limits is None:
            self._limits = QueryLimits()
        return self._limits

    @limits.setter
    def limits(self, value: QueryLimits) -> None:
        self._limits = value

    def engine(self, pid: str) -> QueryEngine:
        from hvelv.datasets.engine import QueryEngine

        with self._lock:
            engine = self._engines.get(pid)
            if engine is None:
                engine = self._engines[pid] = QueryEngine(self.settings)
            return engine

    def warm(self, pid: str, version: DatasetVersion) -> Future[Any] | None:
        """Start decrypting a newly ingested version into this process's cache, in the
        background, and then building its working copy for the uses already reading the
        dataset (:meth:`QueryEngine.warm`), so that their next query finds it built and other
        uses' first query only builds theirs. Never raises: a failure is logged (the ingest it
        follows has succeeded regardless)."""
        try:
            future: Future[Any] = self.engine(pid).warm(version)
        except Exception as exc:
            _warm_failed(pid, version, exc)
            return None
        settled: Future[None] = Future()  # done once the outcome is logged
        with self._lock:
            self._warming.add(settled)

        def done(f: Future[Any]) -> None:
            try:
                exc = None if f.cancelled() else f.exception()
                if exc is not None:
                    _warm_failed(pid, version, exc)
                elif not f.cancelled() and f.result():
                    log.info(
                        "dataset warm-up: %s %s: working copies of %d use(s) built",
                        pid,
                        version.ref,
                        f.result(),
                        extra={"event": "dataset.warmup"},
                    )
            finally:
                with self._lock:
                    self._warming.discard(settled)
                settled.set_result(None)

        future.add_done_callback(done)
        return future

    def settle(self, timeout: float | None = None) -> bool:
        """Wait for the warm-ups started so far; False if some are still running."""
        with self._lock:
            pending = set(self._warming)
        return not wait(pending, timeout).not_done

    def forget(self, pid: str, key: str) -> None:
        """A version of ``pid`` stored under ``key`` was deleted: drop everything this process
        holds of it (decrypted table, working copies) and never load it again."""
        with self._lock:
            engine = self._engines.get(pid)
        if engine is not None:
            engine.forget(key)

    def ingest_lock(self, pid: str) -> threading.Lock:
        with self._lock:
            return self._ingest_locks.setdefault(pid, threading.Lock())

    def keys(self, session: Session, pid: str) -> ParticipantKeys:
        """The project's key registry, caught up with the table (append-only, so only new rows
        are read). The returned object only grows; callers must not add keys to it."""
        from hvelv.datasets.keys import ParticipantKeys

        with self._lock:
            lock = self._key_locks.setdefault(pid, threading.Lock())
            registry = self._keys.setdefault(pid, ParticipantKeys())
        with lock:
            rows = session.execute(
                select(ParticipantKeyRow.key, ParticipantKeyRow.pseudonym)
                .where(ParticipantKeyRow.project_id == pid, ParticipantKeyRow.key >= len(registry))
                .order_by(ParticipantKeyRow.key)
            ).all()
            for row in rows:
                if row.key != registry.key(row.pseudonym):
                    raise RuntimeError(f"participant key registry of {pid} is not dense")
        return registry

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()
            self._keys.clear()


def _warm_failed(pid: str, version: DatasetVersion, exc: BaseException) -> None:
    from hvelv.datasets.enforce import VersionGone

    if isinstance(exc, VersionGone):  # deleted before it was loaded: nothing to warm
        return
    log.warning(
        "dataset warm-up failed: %s %s: %s: %s",
        pid,
        version.ref,
        type(exc).__name__,
        str(exc)[:200],
        extra={"event": "dataset.warmup_failed"},
    )
