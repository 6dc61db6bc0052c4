"""Engine and session factory for SQLite (embedded default) and PostgreSQL.

Write transactions on SQLite begin with ``BEGIN IMMEDIATE`` so that concurrent writers
queue on the database lock instead of failing when a read transaction tries to upgrade.
On PostgreSQL write transactions take one transaction-scoped advisory lock: every state
change appends to the hash-chained audit ledger, whose head admits one writer at a time
anyway, so taking the lock first keeps id allocation and chain order simple and
deadlock-free.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

WRITE_OPTION = "hvelv_write"


class Database:
    """Owns the engine; hands out read and write sessions."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                # created owner-only; SQLite gives its -wal and -shm files the same mode
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = 2 * pool_size
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        # SQLite writers of this process queue here before BEGIN IMMEDIATE (see _configure_sqlite)
        self.write_gate = threading.Lock()
        if self.is_sqlite:
            _configure_sqlite(self.engine, sqlite_synchronous, self.write_gate)
        else:
            _configure_postgresql(self.engine)
        _direct_savepoints(self.engine)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )
        self._watches: list[TableWatch] = []
        for factory in (self._reader, self._writer):
            _track_written_tables(factory, self._watches)

    def watch(self, tables: frozenset[str]) -> TableWatch:
        """A counter that moves after every commit, through this process's sessions, that
        wrote to any of ``tables`` (ORM flushes and statements run through a session)."""
        watch = TableWatch(tables)
        self._watches.append(watch)
        return watch

    def reader(self) -> Session:
        return self._reader()

    def writer(self) -> Session:
        return self._writer()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: commits on success, rolls back on any exception."""
        with self._writer() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


class TableWatch:
    """See :meth:`Database.watch`. ``generation`` moves only *after* the commit, so a reader
    that read a row before a change was committed holds an older generation than the one
    current once the change is visible."""

    def __init__(self, tables: frozenset[str]) -> None:
        self.tables = tables
        self.generation = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.generation += 1


_WRITTEN = "hvelv_written_tables"


def _track_written_tables(factory: sessionmaker[Session], watches: list[TableWatch]) -> None:
    def written(session: Session) -> set[str]:
        found: set[str] = session.info.setdefault(_WRITTEN, set())
        return found

    @event.listens_for(factory, "after_flush")
    def _after_flush(session: Session, flush: UOWTransaction) -> None:
        if watches:
            tables = written(session)
            for obj in (*session.new, *session.dirty, *session.deleted):
                table = getattr(obj, "__tablename__", None)
                if table is not None:
                    tables.add(table)

    @event.listens_for(factory, "do_orm_execute")
    def _on_execute(state: ORMExecuteState) -> None:
        if watches and (state.is_insert or state.is_update or state.is_delete):
            table = getattr(state.statement, "table", None)
            name = getattr(table, "name", None)
            written(state.session).add(name if isinstance(name, str) else "*")

    @event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        tables = session.info.pop(_WRITTEN, None)
        if tables:
            for watch in watches:
                if "*" in tables or not watch.tables.isdisjoint(tables):
                    watch.bump()

    @event.listens_for(factory, "after_rollback")
    def _after_rollback(session: Session) -> None:
        # (a savepoint rolled back keeps its marks: a spurious bump only costs a cache miss)
        session.info.pop(_WRITTEN, None)


_SAVEPOINT_NAME = re.compile(r"^sa_savepoint_[0-9]+$")


def _direct_savepoints(engine: Engine) -> None:
    """Emit SAVEPOINT, RELEASE and ROLLBACK TO on the driver's cursor. SQLAlchemy compiles a
    new clause for each (its names are numbered, so the compiled cache never hits): that was
    ≈ 15 % of the CPU of a group-commit batch, which runs every job in a savepoint. Only the
    emission changes; SQLAlchemy still names and tracks the savepoints."""
    dialect: Any = engine.dialect
    originals = {
        "do_savepoint": ("SAVEPOINT {}", dialect.do_savepoint),
        "do_release_savepoint": ("RELEASE SAVEPOINT {}", dialect.do_release_savepoint),
        "do_rollback_to_savepoint": ("ROLLBACK TO SAVEPOINT {}", dialect.do_rollback_to_savepoint),
    }

    def emitter(template: str, original: Callable[[Connection, str], None]) -> Any:
        def emit(connection: Connection, name: str) -> None:
            if not _SAVEPOINT_NAME.match(name):  # a name given by the caller: the usual way
                original(connection, name)
                return
            cursor = connection.connection.cursor()
            try:
                cursor.execute(template.format(name))
            finally:
                cursor.close()

        return emit

    for method, (template, original) in originals.items():
        setattr(dialect, method, emitter(template, original))


def _configure_sqlite(engine: Engine, synchronous: str, gate: threading.Lock) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # take over transaction control from pysqlite so BEGIN IMMEDIATE can be issued
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    # Writers of this process queue on a lock before BEGIN IMMEDIATE: a blocked acquire wakes
    # as soon as the lock is free, where SQLite's busy handler polls with growing sleeps (up to
    # 100 ms) and lets some writers starve for seconds under load. Other processes still meet
    # at SQLite's own lock; after GATE_TIMEOUT a writer falls back to it.

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.info[_GATED] = gate.acquire(timeout=GATE_TIMEOUT)
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _release(conn)
                raise
        else:
            conn.exec_driver_sql("BEGIN")

    def _release(conn: Connection) -> None:
        if conn.info.pop(_GATED, False):
            gate.release()

    @event.listens_for(engine, "commit")
    def _on_commit(conn: Connection) -> None:
        _release(conn)

    @event.listens_for(engine, "rollback")
    def _on_rollback(conn: Connection) -> None:
        _release(conn)


_GATED = "hvelv_write_gate"
GATE_TIMEOUT = 30.0


WRITE_LOCK_KEY = 0x48564C56  # "HVLV"


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
