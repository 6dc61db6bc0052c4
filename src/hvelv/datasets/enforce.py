"""Consent enforcement: per use, a DuckDB database holding only the rows that use may see.

For each use (one purpose, action, requester...) the engine keeps a separate in-memory DuckDB
database (:class:`UseDatabase`). For every dataset version a query of that use reads, it holds a
*working copy*: a native DuckDB table with the rows whose participant the use's current
:class:`~hvelv.datasets.keys.Permits` allows, and a view over it without the internal key column.
Queries of the use run on that database only, so rows a use may not see are not merely filtered
out by the rewritten SQL: they are not in the database the query runs on at all.

Keeping a copy current is incremental. Before every query the copy's mask is compared with the
current permit mask (one vectorised ``!=`` over the participants); if nothing changed the query
runs at once. Otherwise the withdrawn participants' rows are deleted (``DELETE ... WHERE _hv_pk IN``
a small key list) and newly permitted participants' rows inserted (selected from the decrypted
base table with a boolean lookup on the dense key), in one transaction, so a withdrawal is
visible to the next query. When many participants changed (more than ``rebuild_fraction``), the
copy is rebuilt instead.

Low-cardinality text columns (at most :data:`ENUM_MAX_VALUES` distinct values, e.g. ICD-10 codes,
test names, sex) are stored as DuckDB ``ENUM`` types whose values are sorted, so comparisons,
ordering and results are those of the text (DuckDB compares an ENUM with text as text), while
grouping and joining on them work on small integers. The ENUM is made from the copy's own rows;
rows with a value it does not know trigger a rebuild. The type's definition can name a value of a
participant who withdrew since the last rebuild; type introspection (``typeof``, ``enum_range``,
``duckdb_types``) is therefore not on the SQL allow-list.

Why not filter at query time? Measured on 10 M rows (``bench/datasets.py``): a semi-join with the
permitted pseudonyms or keys costs a large share of the query, a working copy costs nothing per
query and a few milliseconds per consent change. The price is memory: one filtered copy per
(use, dataset) in use, bounded by the engine's LRU limits.

A dataset without a participant column is copied whole, and only when it is marked as holding no
personal data; otherwise reading it raises :class:`~hvelv.datasets.errors.DatasetNotQueryable`.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Final

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from hvelv.datasets.errors import DatasetNotQueryable
from hvelv.datasets.ingest import DatasetVersion
from hvelv.datasets.keys import PK_COLUMN, Permits
from hvelv.datasets.limits import Deadline
from hvelv.datasets.sql_vet import RESERVED_PREFIX
from hvelv.datasets.storage import read_table

__all__ = [
    "ENUM_MAX_VALUES",
    "BaseCache",
    "BaseTable",
    "UseDatabase",
    "VersionGone",
    "WorkingCopy",
    "connect_locked",
    "quote",
]

#: text columns with at most this many distinct values become ENUMs in working copies
ENUM_MAX_VALUES: Final = 4096
_SMALL_CHANGE: Final = 2048  # up to this many added participants: take their row ranges
_SELECTED: Final = f"{RESERVED_PREFIX}_selected"
_CLEANUP_TRIES: Final = 3  # a ROLLBACK or unregister cut off by a deadline's interrupt is retried


def quote(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def connect_locked(*, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB database that cannot touch files, network or extensions.

    External access off (no files, ``COPY``, ``ATTACH``, ``INSTALL``), extension autoloading
    off, Python replacement scans off (a query cannot read Python variables), no temporary
    directory and a zero temp size (nothing spills to disk), memory and thread limits, and the
    configuration locked so that none of this can be changed from SQL.
    """
    return duckdb.connect(
        ":memory:",
        config={
            "enable_external_access": False,
            "autoload_known_extensions": False,
            "autoinstall_known_extensions": False,
            "python_enable_replacements": False,
            "temp_directory": "",
            "max_temp_directory_size": "0B",
            "memory_limit": memory_limit,
            "threads": threads,
            "lock_configuration": True,
        },
    )


@dataclass(slots=True)
class BaseTable:
    """A decrypted dataset version in memory (never on disk).

    ``order``/``bounds``: row numbers sorted by participant key, and where each key's rows start
    in that order (``bounds[k]:bounds[k + 1]``), to find one participant's rows at once; made
    on the first incremental insert.
    """

    table: pa.Table
    pk: npt.NDArray[np.int32] | None
    keys: int  # 1 + the highest participant key in the data (0 without participants)
    enums: tuple[str, ...] = ()
    order: npt.NDArray[np.int64] | None = field(default=None, repr=False)
    bounds: npt.NDArray[np.int64] | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)

    def rows_of(self, added: npt.NDArray[np.int64]) -> pa.Table:
        """The rows of the participants with keys ``added``."""
        assert self.pk is not None
        if len(added) <= _SMALL_CHANGE:
            if self.order is None or self.bounds is None:  # built on first need, then kept
                self.order = np.argsort(self.pk, kind="stable")
                self.bounds = np.searchsorted(self.pk[self.order], np.arange(self.keys + 1))
            parts = [self.order[self.bounds[k] : self.bounds[k + 1]] for k in added.tolist()]
            rows = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
            return self.table.take(pa.array(rows))
        lookup = np.zeros(self.keys, dtype=np.bool_)
        lookup[added] = True
        return self.table.filter(pa.array(lookup[self.pk]))


def _enum_columns(table: pa.Table, skip: set[str]) -> tuple[str, ...]:
    out: list[str] = []
    for f in table.schema:
        if f.name in skip or not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
            continue
        column = table.column(f.name)
        if pc.count_distinct(column.slice(0, 65_536)).as_py() > ENUM_MAX_VALUES:
            continue
        if pc.count_distinct(column).as_py() <= ENUM_MAX_VALUES:
            out.append(f.name)
    return tuple(out)


class VersionGone(Exception):
    """The version was deleted (its decrypted copy is no longer loaded or kept)."""


class BaseCache:
    """Decrypted versions, least recently used first out beyond ``max_bytes``.

    Loads run on a small thread pool and are shared: a query waiting for a version that another
    query (or the warm-up after an ingest) is already decrypting waits for the same load, and
    may stop waiting when its deadline passes while the load completes in the background.
    Deleted versions are forgotten (:meth:`forget`) and never loaded again in this process.
    """

    def __init__(self, max_bytes: int, loader_threads: int = 1) -> None:
        self._max = max_bytes
        self._items: OrderedDict[str, BaseTable] = OrderedDict()
        self._loading: dict[str, Future[BaseTable]] = {}
        self._gone: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(loader_threads, thread_name_prefix="hvelv-dataset-load")
        self.loads = 0  # versions decrypted so far (completed loads)

    def load(self, version: DatasetVersion) -> Future[BaseTable]:
        """The decrypted ``version``: a completed future when cached, else the (shared) load."""
        key = version.location.key
        with self._lock:
            if key in self._gone:
                raise VersionGone(version.ref)
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                done: Future[BaseTable] = Future()
                done.set_result(hit)
                return done
            pending = self._loading.get(key)
            if pending is None:
                pending = self._pool.submit(self._load, version)
                self._loading[key] = pending
            return pending

    def get(self, version: DatasetVersion, deadline: Deadline | None = None) -> BaseTable:
        """The decrypted ``version``, waiting at most until ``deadline``."""
        pending = self.load(version)
        try:
            return pending.result(None if deadline is None else deadline.remaining())
        except FutureTimeout:
            assert deadline is not None
            raise deadline.exceeded() from None

    def cached(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def gone(self, key: str) -> bool:
        """Whether the version stored under ``key`` was deleted (:meth:`discard` ``gone``)."""
        with self._lock:
            return key in self._gone

    def _load(self, version: DatasetVersion) -> BaseTable:
        key = version.location.key
        try:
            base = _decrypt(version)
        finally:
            with self._lock:
                self._loading.pop(key, None)
        with self._lock:
            if key in self._gone:
                raise VersionGone(version.ref)
            self.loads += 1
            self._items[key] = base
            total = sum(b.nbytes for b in self._items.values())
            while total > self._max and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                total -= old.nbytes
        return base

    def discard(self, keys: Iterable[str], *, gone: bool = False) -> None:
        """Drop the versions ``keys``; ``gone``: they were deleted, never load them again."""
        with self._lock:
            for key in keys:
                self._items.pop(key, None)
                if gone:
                    self._gone.add(key)

    def keys(self) -> set[str]:
        with self._lock:
            return set(self._items)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._items.clear()


def _decrypt(version: DatasetVersion) -> BaseTable:
    table = read_table(version.location)
    skip = {PK_COLUMN}
    if version.participant_column is None:
        return BaseTable(table, None, 0, _enum_columns(table, skip))
    skip.add(version.participant_column)
    pk = table.column(PK_COLUMN).to_numpy().astype(np.int32, copy=False)
    keys = int(pk.max()) + 1 if len(pk) else 0
    return BaseTable(table, pk, keys, _enum_columns(table, skip))


@dataclass(slots=True)
class WorkingCopy:
    table: str
    view: str
    dataset: str = ""  # the dataset's name and version number (what a warm-up looks for)
    version: int = 0
    built: bool = False
    mask: npt.NDArray[np.bool_] | None = field(default=None, repr=False)
    generation: int = 0
    enum_values: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    stats: dict[str, int] = field(default_factory=lambda: {"builds": 0, "updates": 0})


class UseDatabase:
    """The DuckDB database of one use, with its working copies (see the module docstring)."""

    def __init__(self, *, memory_limit: str, threads: int, rebuild_fraction: float = 0.05) -> None:
        self.con = connect_locked(memory_limit=memory_limit, threads=threads)
        self.lock = threading.RLock()
        self._copies: dict[str, WorkingCopy] = {}
        self._ids = itertools.count(1)
        self._rebuild = rebuild_fraction
        self._deadline: Deadline | None = None
        self.closed = False
        #: the permits of the use's latest sync (over every participant key known then)
        self.permits: Permits | None = None
        #: a warm-up building a copy now: the version's storage key and its deadline (which a
        #: query that does not read that version fires, to have the database at once)
        self.warming: tuple[str, Deadline] | None = None

    def close(self) -> None:
        self.closed = True
        self.con.close()

    def relation(self, version: DatasetVersion) -> str:
        """The internal view name for ``version`` (assigned now, built by :meth:`sync`)."""
        copy = self._copies.get(version.location.key)
        if copy is None:
            n = next(self._ids)
            copy = WorkingCopy(
                table=f"{RESERVED_PREFIX}_t{n}",
                view=f"{RESERVED_PREFIX}_v{n}",
                dataset=version.name,
                version=version.version,
            )
            self._copies[version.location.key] = copy
        return copy.view

    def copy_of(self, version: DatasetVersion) -> WorkingCopy:
        return self._copies[version.location.key]

    def copies(self) -> dict[str, WorkingCopy]:
        """The working copies by storage key (a snapshot; hold :attr:`lock` to act on it)."""
        return dict(self._copies)

    def yield_to(self, needed: Collection[str]) -> bool:
        """Interrupt a running warm-up build unless its version is in ``needed`` (the storage
        keys a waiting query reads); True if one was interrupted. Its transaction is rolled
        back, so the copy is then as before the warm-up (none)."""
        warming = self.warming
        if warming is None or warming[0] in needed:
            return False
        warming[1].fire()
        return True

    def keys(self) -> set[str]:
        """The storage keys of the versions this database holds copies of."""
        return set(self._copies.copy())  # dict.copy is atomic: no lock needed to read

    def drop(self, key: str) -> bool:
        """Drop the working copy of the version stored under ``key`` (its table, view and
        types); True if there was one. Hold :attr:`lock`."""
        copy = self._copies.pop(key, None)
        if copy is None:
            return False
        con = self.con
        con.execute(f"DROP VIEW IF EXISTS main.{quote(copy.view)}")
        con.execute(f"DROP TABLE IF EXISTS main.{quote(copy.table)}")
        types = con.execute(
            "SELECT type_name FROM duckdb_types() WHERE starts_with(type_name, ?)",
            [f"{copy.table}_e"],
        ).fetchall()
        for (name,) in types:
            con.execute(f"DROP TYPE IF EXISTS main.{quote(str(name))}")
        return True

    def _rollback(self) -> None:
        self._stop_watching()
        try:
            self._despite_interrupts(lambda: self.con.execute("ROLLBACK"))
        except duckdb.TransactionException:  # none active
            return

    def _stop_watching(self) -> None:
        """After a failure: the deadline interrupts this connection no more, so that the
        clean-up is not cut off (a query waiting for this use fires the deadline of a
        warm-up build, and several may come)."""
        if self._deadline is not None:
            self._deadline.unwatch(self.con)

    @staticmethod
    def _despite_interrupts(action: Callable[[], object]) -> None:
        """Run ``action`` (a ROLLBACK, dropping a registered table), again if interrupted.

        A deadline can fire just after the statement it was meant for ended: the interrupt
        then ends this clean-up instead (seen under load: a ROLLBACK cut off left the
        transaction aborted, "Current transaction is aborted"; an unregister cut off left the
        registered table behind). After a failure the connection is no longer watched
        (:meth:`_stop_watching`), so only an interrupt sent just before can land: the next
        try runs. On success the deadline's own timer may still fire once.
        """
        for attempt in range(_CLEANUP_TRIES):
            try:
                action()
                return
            except duckdb.InterruptException:
                if attempt == _CLEANUP_TRIES - 1:
                    raise

    @contextmanager
    def _registered(self, name: str, table: pa.Table) -> Iterator[str]:
        """``table`` readable as ``name`` by this connection's SQL while the block runs.
        Register outside a transaction: in one that failed, dropping it fails too."""
        self.con.register(name, table)  # interrupted, it registers nothing
        try:
            yield name
        except BaseException:
            self._stop_watching()
            self._despite_interrupts(lambda: self.con.unregister(name))
            raise
        self._despite_interrupts(lambda: self.con.unregister(name))

    @contextmanager
    def limited(self, deadline: Deadline | None) -> Iterator[None]:
        """Run the block's statements under ``deadline`` (interrupted when it passes)."""
        if deadline is None:
            yield
            return
        self._deadline = deadline
        try:
            with deadline.watching(self.con):
                yield
        finally:
            self._deadline = None

    def _execute(self, sql: str) -> duckdb.DuckDBPyConnection:
        if self._deadline is not None:
            self._deadline.check()
        return self.con.execute(sql)

    def sync(
        self,
        version: DatasetVersion,
        base: BaseTable,
        permits: Permits,
        deadline: Deadline | None = None,
    ) -> WorkingCopy:
        """Bring the working copy of ``version`` in line with ``permits``; return it.

        With a ``deadline``, a build or update still running when it passes is interrupted and
        rolled back: the copy is then as it was before (none, if it was being built first).
        """
        with self.limited(deadline):
            try:
                copy = self._sync(version, base, permits)
                self.permits = permits
                return copy
            except duckdb.Error:
                if deadline is not None and deadline.fired:
                    raise deadline.exceeded() from None
                raise

    def _sync(self, version: DatasetVersion, base: BaseTable, permits: Permits) -> WorkingCopy:
        self.relation(version)
        copy = self._copies[version.location.key]
        if version.participant_column is None:
            if version.personal_data:
                raise DatasetNotQueryable(
                    f"dataset {version.name!r} has no participant column and is not marked as "
                    "holding no personal data"
                )
            if not copy.built:
                self._build(copy, base, None)
            return copy
        assert base.pk is not None
        new = permits.padded(base.keys)
        if not copy.built or copy.mask is None:
            self._build(copy, base, new[base.pk])
            copy.mask = new
            return copy
        changed = np.flatnonzero(copy.mask != new)
        if len(changed) == 0:
            return copy
        if len(changed) > self._rebuild * max(base.keys, 1) or not self._update(
            copy, base, changed, new
        ):
            self._build(copy, base, new[base.pk])
        copy.mask = new
        return copy

    def _build(
        self, copy: WorkingCopy, base: BaseTable, selection: npt.NDArray[np.bool_] | None
    ) -> None:
        """(Re)create the copy's table, its ENUM types and its view from the rows of ``base``
        where ``selection`` is true (all rows for a dataset without participants).

        DuckDB does the filtering (multi-threaded) from the registered Arrow table with the
        selection as an extra column, which is faster than filtering in Arrow first. All in one
        transaction: if it fails or is interrupted, the previous copy (if any) is left intact.
        """
        run = self._execute
        src = f"{RESERVED_PREFIX}_src"
        data = base.table
        where = "TRUE"
        if selection is not None:
            data = data.append_column(_SELECTED, pa.array(selection))
            where = quote(_SELECTED)
        generation = copy.generation + 1
        with self._registered(src, data):
            try:
                run("BEGIN TRANSACTION")
                self._fill(copy, base, src, where, selection is not None, generation)
            except BaseException:
                self._rollback()
                raise
        copy.generation = generation
        copy.built = True
        copy.stats["builds"] += 1

    def _fill(
        self,
        copy: WorkingCopy,
        base: BaseTable,
        src: str,
        where: str,
        filtered: bool,
        generation: int,
    ) -> None:
        """The statements of :meth:`_build`, inside its transaction."""
        run = self._execute
        old_types = [f"{copy.table}_e{copy.generation}_{i}" for i in range(len(copy.enum_values))]
        run(f"DROP VIEW IF EXISTS main.{quote(copy.view)}")
        run(f"DROP TABLE IF EXISTS main.{quote(copy.table)}")
        for name in old_types:
            run(f"DROP TYPE IF EXISTS main.{quote(name)}")
        select: list[str] = []
        enum_values: dict[str, frozenset[str]] = {}
        enums = dict.fromkeys(base.enums)
        for column in base.table.column_names:
            if column not in enums:
                select.append(quote(column))
                continue
            type_name = f"{copy.table}_e{generation}_{len(enum_values)}"
            typ = f"main.{quote(type_name)}"
            run(
                f"CREATE TYPE {typ} AS ENUM (SELECT DISTINCT {quote(column)} "
                f"FROM {quote(src)} WHERE {where} AND {quote(column)} IS NOT NULL "
                "ORDER BY ALL)"
            )
            rows = run(f"SELECT unnest(enum_range(NULL::{typ}))").fetchall()
            enum_values[column] = frozenset(str(r[0]) for r in rows)
            select.append(f"CAST({quote(column)} AS {typ}) AS {quote(column)}")
        run(
            f"CREATE TABLE main.{quote(copy.table)} AS SELECT {', '.join(select)} "
            f"FROM {quote(src)} WHERE {where}"
        )
        exclude = f" EXCLUDE ({quote(PK_COLUMN)})" if filtered else ""
        run(
            f"CREATE VIEW main.{quote(copy.view)} AS SELECT *{exclude} "
            f"FROM main.{quote(copy.table)}"
        )
        run("COMMIT")
        copy.enum_values = enum_values

    def _update(
        self,
        copy: WorkingCopy,
        base: BaseTable,
        changed: npt.NDArray[np.int64],
        new: npt.NDArray[np.bool_],
    ) -> bool:
        """Delete and insert the changed participants' rows; False if a rebuild is needed."""
        removed = changed[~new[changed]]
        added = changed[new[changed]]
        rows = base.rows_of(added) if len(added) else None
        if rows is not None:
            for column, known in copy.enum_values.items():
                values = pc.unique(pc.drop_null(rows.column(column))).to_pylist()
                if not known.issuperset(values):
                    return False  # a value the ENUM does not know: rebuild
        run = self._execute
        with ExitStack() as registered:
            keys = (
                registered.enter_context(
                    self._registered(
                        f"{RESERVED_PREFIX}_keys", pa.table({"k": removed.astype(np.int32)})
                    )
                )
                if len(removed)
                else None
            )
            src = (
                registered.enter_context(self._registered(f"{RESERVED_PREFIX}_src", rows))
                if rows is not None
                else None
            )
            run("BEGIN TRANSACTION")
            try:
                if keys is not None:
                    run(
                        f"DELETE FROM main.{quote(copy.table)} "
                        f"WHERE {quote(PK_COLUMN)} IN (SELECT k FROM {quote(keys)})"
                    )
                if src is not None:
                    run(f"INSERT INTO main.{quote(copy.table)} BY NAME SELECT * FROM {quote(src)}")
                run("COMMIT")
            except BaseException:
                self._rollback()
                raise
        copy.stats["updates"] += 1
        return True
