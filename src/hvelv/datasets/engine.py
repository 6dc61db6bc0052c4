"""The query engine: vetted SQL over consent-restricted working copies, with limits.

``QueryEngine.query(sql, datasets=..., use=..., permits=...)``:

1. assigns the internal relation names of the project's datasets in the use's database and vets
   and rewrites the SQL (:func:`hvelv.datasets.sql_vet.vet_query`);
2. for each dataset the query reads, decrypts the version into memory once (cached) and brings
   the use's working copy in line with ``permits`` (:mod:`hvelv.datasets.enforce`);
3. runs the rewritten SQL on the use's own DuckDB database (locked down, see
   :func:`~hvelv.datasets.enforce.connect_locked`), streaming the result and stopping with
   :class:`~hvelv.datasets.errors.QueryLimitExceeded` past ``max_rows``, ``max_bytes`` or
   ``timeout_s`` (DuckDB is interrupted). The time limit counts from the call: waiting for the
   use, decrypting a version (a load the query stops waiting for goes on in the background and
   lands in the cache) and building its working copy (interrupted and rolled back) all count.

After an ingest, :meth:`QueryEngine.warm` decrypts the new version in the background and then
rebuilds, for the uses already reading the dataset, their working copies for the new version
(see its docstring), so their next query does not build.

The result carries the permit snapshot's ledger position, to be logged with the query (decision
log and audit) by the caller. Queries of one use are serialised (sync, run, fetch under the use's
lock), so a result always matches the permits it is reported with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import duckdb
import pyarrow as pa

from hvelv.datasets.enforce import BaseCache, BaseTable, UseDatabase, VersionGone, WorkingCopy
from hvelv.datasets.errors import DatasetChanged, QueryFailed, QueryLimitExceeded
from hvelv.datasets.ingest import DatasetVersion
from hvelv.datasets.keys import Permits
from hvelv.datasets.limits import Deadline, EngineSettings, QueryLimits
from hvelv.datasets.sql_vet import vet_query
from hvelv.storage.base import ObjectNotFoundError

__all__ = ["EngineSettings", "QueryEngine", "QueryLimits", "QueryResult"]

log = logging.getLogger("hvelv.datasets")

#: a warm-up build still running after this long is interrupted (rolled back; the use's next
#: query builds the copy itself, under its own time limit)
WARM_BUILD_TIMEOUT_S: Final = 600.0


@dataclass(frozen=True, slots=True)
class QueryResult:
    table: pa.Table
    ledger_position: int
    datasets: tuple[str, ...]  # name@version of every dataset read
    sql: str  # the rewritten SQL that ran
    elapsed_s: float


class QueryEngine:
    """Consent-enforced queries for one project (see the module docstring)."""

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.bases = BaseCache(self.settings.base_cache_bytes, self.settings.loader_threads)
        self._uses: OrderedDict[Hashable, UseDatabase] = OrderedDict()
        self._lock = threading.Lock()
        self._warmer = ThreadPoolExecutor(1, thread_name_prefix="hvelv-dataset-warm")
        self.warm_builds = 0  # working copies built by warm-ups (not by queries)
        self.warm_interrupted = 0  # warm-up builds interrupted by a query (or their time bound)

    def close(self) -> None:
        self._warmer.shutdown(wait=False, cancel_futures=True)
        self.bases.close()
        with self._lock:
            dbs = list(self._uses.values())
            self._uses.clear()
        for db in dbs:
            db.yield_to(())  # a warm-up build running: interrupt it
            with db.lock:
                db.close()

    def database(self, use: Hashable) -> UseDatabase:
        """The database of ``use`` (created on first use)."""
        with self._lock:
            db = self._uses.get(use)
            if db is None:
                s = self.settings
                db = UseDatabase(
                    memory_limit=s.memory_limit,
                    threads=s.threads,
                    rebuild_fraction=s.rebuild_fraction,
                )
                self._uses[use] = db
                while len(self._uses) > s.max_uses:
                    _, old = self._uses.popitem(last=False)
                    old.yield_to(())  # a warm-up building there: stop it
                    with old.lock:
                        old.close()
            else:
                self._uses.move_to_end(use)
            return db

    def databases(self) -> list[UseDatabase]:
        with self._lock:
            return list(self._uses.values())

    def held(self) -> set[str]:
        """Storage keys of the versions this engine holds data of (decrypted or copied)."""
        keys = self.bases.keys()
        for db in self.databases():
            keys |= db.keys()
        return keys

    def warm(self, version: DatasetVersion) -> Future[int]:
        """After ``version`` was ingested: decrypt it into the cache (the loader thread), then
        build its working copy in the databases of the uses that already read an older version
        of the same dataset — the ``settings.warm_uses`` most recently used of them, one after
        another on the engine's warm-up thread — so their next query finds the copy built.

        Nothing is blocked: the future completes in the background with the number of copies
        built (or the load's error; :class:`VersionGone` is raised at once for a deleted
        version). A copy is built under the use's lock, in one transaction, from the permits of
        the use's latest query (participants new since then are left out; the next query's
        sync adds them like any consent change), so a query never sees a half-built copy and
        still brings the copy in line with its own consent snapshot first. A query of the use
        that reads other datasets interrupts the build (rolled back, not retried); one that
        reads this version waits for it, within its time limit. Why a bound: each build is a
        full pass over the version (about 0.65 s per million rows with one thread), so a
        project with many uses would keep the thread and the memory busy long after the ingest
        for uses that may not come back; the others build at their first query, as before.
        """
        loading = self.bases.load(version)
        return self._warmer.submit(self._warm_uses, version, loading)

    def _warm_uses(self, version: DatasetVersion, loading: Future[BaseTable]) -> int:
        base = loading.result()
        built = 0
        for db in self._readers_of(version)[: self.settings.warm_uses]:
            try:
                if self._warm_use(db, version, base):
                    built += 1
            except Exception as exc:  # one use failing leaves the others (and the ingest) be
                log.warning(
                    "dataset warm-up of a use failed: %s: %s: %s",
                    version.ref,
                    type(exc).__name__,
                    str(exc)[:200],
                    extra={"event": "dataset.warmup_failed"},
                )
        return built

    def _readers_of(self, version: DatasetVersion) -> list[UseDatabase]:
        """The databases holding a built copy of an older version of ``version``'s dataset,
        most recently used first."""
        with self._lock:
            dbs = list(reversed(self._uses.values()))
        return [db for db in dbs if _reads_older(db.copies(), version)]

    def _warm_use(self, db: UseDatabase, version: DatasetVersion, base: BaseTable) -> bool:
        """Build ``version``'s copy in ``db`` (see :meth:`warm`); False if not needed or
        interrupted."""
        key = version.location.key
        with db.lock:  # waits for a query of the use that is running
            if db.closed or db.permits is None or self.bases.gone(key):
                return False
            copies = db.copies()
            mine = copies.get(key)
            if mine is not None and mine.built:
                return False  # a query built it already
            if not _reads_older(copies, version) or any(
                c.dataset == version.name and c.version > version.version for c in copies.values()
            ):
                return False  # not read by this use, or a newer version is
            for old in _older(copies, version):  # superseded: what a query would retire first
                db.drop(old)
            with Deadline(WARM_BUILD_TIMEOUT_S) as deadline:
                db.warming = (key, deadline)
                try:
                    db.sync(version, base, db.permits, deadline)
                except QueryLimitExceeded:
                    self.warm_interrupted += 1
                    log.info(
                        "dataset warm-up of a use interrupted by a query: %s",
                        version.ref,
                        extra={"event": "dataset.warmup_interrupted"},
                    )
                    return False
                finally:
                    db.warming = None
            self.warm_builds += 1
            return True

    def forget(self, key: str) -> None:
        """The version stored under ``key`` was deleted: drop its decrypted copy and every use's
        working copy of it (waiting for queries using them to end), and never load it again."""
        self.bases.discard([key], gone=True)
        for db in self.databases():
            warming = db.warming
            if warming is not None and warming[0] == key:
                warming[1].fire()  # a warm-up building this version: stop it
            with db.lock:
                if not db.closed:
                    db.drop(key)

    def retire(self, keys: Collection[str]) -> None:
        """Drop what is held of versions that are no longer current (superseded or deleted,
        e.g. by another process). Working copies of uses busy with a query are skipped; their
        next query retires them."""
        if not keys:
            return
        self.bases.discard(keys)
        for db in self.databases():
            if not db.lock.acquire(blocking=False):
                continue
            try:
                if not db.closed:
                    for key in db.keys() & set(keys):
                        db.drop(key)
            finally:
                db.lock.release()

    def query(
        self,
        sql: str,
        *,
        datasets: Mapping[str, DatasetVersion],
        use: Hashable,
        permits: Permits,
        limits: QueryLimits | None = None,
        retire: Collection[str] = (),
    ) -> QueryResult:
        """Run ``sql`` for ``use`` over ``datasets`` (name -> current version).

        The time limit covers the whole call: waiting for the use's lock, decrypting versions,
        building or updating working copies and running the SQL. ``retire``: storage keys of
        versions no longer current, dropped first (:meth:`retire`).
        """
        limits = limits or QueryLimits()
        started = time.perf_counter()
        with Deadline(limits.timeout_s) as deadline:
            db = self._acquire(use, deadline, {v.location.key for v in datasets.values()})
            try:
                if retire:
                    self.retire(retire)
                names = {name: db.relation(version) for name, version in datasets.items()}
                vetted = vet_query(sql, names)
                by_lower = {name.lower(): version for name, version in datasets.items()}
                read = sorted(vetted.datasets)
                for name in read:
                    version = by_lower[name]
                    base = self._base(version, deadline)
                    try:
                        db.sync(version, base, permits, deadline)
                    except duckdb.Error as exc:
                        raise _limit_error(exc, deadline) or exc from None
                table = self._run(db, vetted.sql, limits, names, deadline)
            finally:
                db.lock.release()
        return QueryResult(
            table=table,
            ledger_position=permits.ledger_position,
            datasets=tuple(by_lower[name].ref for name in read),
            sql=vetted.sql,
            elapsed_s=time.perf_counter() - started,
        )

    def _acquire(self, use: Hashable, deadline: Deadline, reads: Collection[str]) -> UseDatabase:
        """The use's database, locked (queries of one use are serialised). A warm-up building
        a copy the query does not read (``reads``: storage keys) is interrupted."""
        while True:
            db = self.database(use)
            if not db.lock.acquire(blocking=False):
                db.yield_to(reads)
                if not db.lock.acquire(timeout=deadline.remaining()):
                    raise deadline.exceeded()
            if not db.closed:
                return db
            db.lock.release()  # closed by the LRU meanwhile: take a new one

    def _base(self, version: DatasetVersion, deadline: Deadline) -> BaseTable:
        try:
            return self.bases.get(version, deadline)
        except (VersionGone, ObjectNotFoundError):
            raise DatasetChanged(
                f"dataset {version.name!r} version {version.version} was deleted meanwhile; "
                "try again"
            ) from None

    def _run(
        self,
        db: UseDatabase,
        sql: str,
        limits: QueryLimits,
        names: Mapping[str, str],
        deadline: Deadline,
    ) -> pa.Table:
        deadline.check()
        cursor = db.con.cursor()
        batches: list[pa.RecordBatch] = []
        rows = 0
        size = 0
        try:
            with deadline.watching(cursor):
                reader = cursor.sql(sql).to_arrow_reader(self.settings.batch_rows)
                for batch in reader:
                    rows += batch.num_rows
                    size += batch.nbytes
                    if rows > limits.max_rows:
                        raise QueryLimitExceeded(
                            "rows",
                            limits.max_rows,
                            f"the result has more than {limits.max_rows} rows",
                        )
                    if size > limits.max_bytes:
                        raise QueryLimitExceeded(
                            "bytes",
                            limits.max_bytes,
                            f"the result is larger than {limits.max_bytes} bytes",
                        )
                    batches.append(batch)
                schema = reader.schema
        except QueryLimitExceeded:
            raise
        except (duckdb.Error, OSError, pa.ArrowException) as exc:
            limit = _limit_error(exc, deadline)
            if limit is not None:
                raise limit from None
            message = str(exc).splitlines()[0][:300]
            for name, internal in names.items():
                message = message.replace(f'main."{internal}"', name).replace(internal, name)
            raise QueryFailed(message) from None
        finally:
            cursor.close()
        return pa.Table.from_batches(batches, schema=schema)


def _older(copies: Mapping[str, WorkingCopy], version: DatasetVersion) -> list[str]:
    """Storage keys of the copies of older versions of ``version``'s dataset."""
    return [
        key
        for key, c in copies.items()
        if c.dataset == version.name and c.version < version.version
    ]


def _reads_older(copies: Mapping[str, WorkingCopy], version: DatasetVersion) -> bool:
    """Whether a use with ``copies`` has read an older version of ``version``'s dataset."""
    return any(
        c.built and c.dataset == version.name and c.version < version.version
        for c in copies.values()
    )


def _limit_error(exc: Exception, deadline: Deadline) -> QueryLimitExceeded | None:
    """The limit a DuckDB failure stands for: time (interrupted at the deadline) or memory."""
    if deadline.fired:
        return deadline.exceeded()
    if isinstance(exc, duckdb.OutOfMemoryException):
        return QueryLimitExceeded(
            "memory", 0, "the query needs more memory than the project's limit"
        )
    return None
