"""Per-process dataset runtime: query engines and participant key registries per project.

Both are accelerators rebuilt from the database and the blob store (API processes stay
stateless): the engines keep decrypted versions and consent-filtered working copies in memory,
the registries mirror the append-only ``dataset_participant_keys`` table.

DuckDB, pyarrow and sqlglot are imported on first use, not when the platform starts: a server
that never serves a dataset request keeps its memory (about 100 MB less).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from hvelv.datasets.models import ParticipantKeyRow

if TYPE_CHECKING:
    from hvelv.datasets.engine import EngineSettings, QueryEngine, QueryLimits
    from hvelv.datasets.keys import ParticipantKeys

__all__ = ["DatasetRuntime"]


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

    @property
    def settings(self) -> EngineSettings:
        if self._settings is None:
            from hvelv.datasets.engine import EngineSettings

            self._settings = EngineSettings(memory_limit="1GB", max_uses=8)
        return self._settings

    @property
    def limits(self) -> QueryLimits:
        if self._limits is None:
            from hvelv.datasets.engine import QueryLimits

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
