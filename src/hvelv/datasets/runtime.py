"""Per-process dataset runtime: query engines and participant key registries per project.

Both are accelerators rebuilt from the database and the blob store (API processes stay
stateless): the engines keep decrypted versions and consent-filtered working copies in memory,
the registries mirror the append-only ``dataset_participant_keys`` table.
"""

from __future__ import annotations

import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from hvelv.datasets.engine import EngineSettings, QueryEngine, QueryLimits
from hvelv.datasets.keys import ParticipantKeys
from hvelv.datasets.models import ParticipantKeyRow

__all__ = ["DatasetRuntime"]


class DatasetRuntime:
    """Query engines and participant key registries per project (process-local caches)."""

    def __init__(
        self, settings: EngineSettings | None = None, limits: QueryLimits | None = None
    ) -> None:
        self.settings = settings or EngineSettings(memory_limit="1GB", max_uses=8)
        self.limits = limits or QueryLimits()
        self._engines: dict[str, QueryEngine] = {}
        self._keys: dict[str, ParticipantKeys] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._ingest_locks: dict[str, threading.Lock] = {}

    def engine(self, pid: str) -> QueryEngine:
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
