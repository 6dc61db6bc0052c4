"""The query engine: vetted SQL over consent-restricted working copies, with limits.

``QueryEngine.query(sql, datasets=..., use=..., permits=...)``:

1. assigns the internal relation names of the project's datasets in the use's database and vets
   and rewrites the SQL (:func:`hvelv.datasets.sql_vet.vet_query`);
2. for each dataset the query reads, decrypts the version into memory once (cached) and brings
   the use's working copy in line with ``permits`` (:mod:`hvelv.datasets.enforce`);
3. runs the rewritten SQL on the use's own DuckDB database (locked down, see
   :func:`~hvelv.datasets.enforce.connect_locked`), streaming the result and stopping with
   :class:`~hvelv.datasets.errors.QueryLimitExceeded` past ``max_rows``, ``max_bytes`` or
   ``timeout_s`` (DuckDB is interrupted).

The result carries the permit snapshot's ledger position, to be logged with the query (decision
log and audit) by the caller. Queries of one use are serialised (sync, run, fetch under the use's
lock), so a result always matches the permits it is reported with.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from hvelv.datasets.enforce import BaseCache, UseDatabase
from hvelv.datasets.errors import QueryFailed, QueryLimitExceeded
from hvelv.datasets.ingest import DatasetVersion
from hvelv.datasets.keys import Permits
from hvelv.datasets.sql_vet import vet_query

__all__ = ["EngineSettings", "QueryEngine", "QueryLimits", "QueryResult"]


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_rows: int = 100_000
    max_bytes: int = 64 << 20
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class EngineSettings:
    memory_limit: str = "4GB"  # per use database
    threads: int = 2
    max_uses: int = 8  # use databases kept (least recently used closed first)
    base_cache_bytes: int = 4 << 30  # decrypted versions kept in memory
    rebuild_fraction: float = 0.05
    batch_rows: int = 65_536


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
        self.bases = BaseCache(self.settings.base_cache_bytes)
        self._uses: OrderedDict[Hashable, UseDatabase] = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for db in self._uses.values():
                db.close()
            self._uses.clear()

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
                    with old.lock:
                        old.close()
            else:
                self._uses.move_to_end(use)
            return db

    def query(
        self,
        sql: str,
        *,
        datasets: Mapping[str, DatasetVersion],
        use: Hashable,
        permits: Permits,
        limits: QueryLimits | None = None,
    ) -> QueryResult:
        """Run ``sql`` for ``use`` over ``datasets`` (name -> current version)."""
        limits = limits or QueryLimits()
        started = time.perf_counter()
        db = self.database(use)
        with db.lock:
            names = {name: db.relation(version) for name, version in datasets.items()}
            vetted = vet_query(sql, names)
            by_lower = {name.lower(): version for name, version in datasets.items()}
            read = sorted(vetted.datasets)
            for name in read:
                version = by_lower[name]
                db.sync(version, self.bases.get(version), permits)
            table = self._run(db, vetted.sql, limits, names)
        return QueryResult(
            table=table,
            ledger_position=permits.ledger_position,
            datasets=tuple(by_lower[name].ref for name in read),
            sql=vetted.sql,
            elapsed_s=time.perf_counter() - started,
        )

    def _run(
        self, db: UseDatabase, sql: str, limits: QueryLimits, names: Mapping[str, str]
    ) -> pa.Table:
        cursor = db.con.cursor()
        timed_out = threading.Event()

        def interrupt() -> None:
            timed_out.set()
            cursor.interrupt()

        timer = threading.Timer(limits.timeout_s, interrupt)
        timer.start()
        batches: list[pa.RecordBatch] = []
        rows = 0
        size = 0
        try:
            reader = cursor.sql(sql).to_arrow_reader(self.settings.batch_rows)
            for batch in reader:
                rows += batch.num_rows
                size += batch.nbytes
                if rows > limits.max_rows:
                    raise QueryLimitExceeded(
                        "rows", limits.max_rows, f"the result has more than {limits.max_rows} rows"
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
            if timed_out.is_set():
                raise QueryLimitExceeded(
                    "time", limits.timeout_s, f"the query ran longer than {limits.timeout_s} s"
                ) from None
            if isinstance(exc, duckdb.OutOfMemoryException):
                raise QueryLimitExceeded(
                    "memory", 0, "the query needs more memory than the project's limit"
                ) from None
            message = str(exc).splitlines()[0][:300]
            for name, internal in names.items():
                message = message.replace(f'main."{internal}"', name).replace(internal, name)
            raise QueryFailed(message) from None
        finally:
            timer.cancel()
            cursor.close()
        return pa.Table.from_batches(batches, schema=schema)
