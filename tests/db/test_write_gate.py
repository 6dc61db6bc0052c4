"""SQLite writers of one process queue on an in-process gate before BEGIN IMMEDIATE; it is
held for exactly the write transaction and released on commit, rollback and failure."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from hvelv.db.engine import Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'gate.db'}")
    with database.write() as session:
        session.execute(text("CREATE TABLE t (n INTEGER)"))
    return database


def test_the_gate_is_held_only_during_a_write_transaction(db: Database) -> None:
    assert not db.write_gate.locked()
    with db.write() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        assert db.write_gate.locked()
    assert not db.write_gate.locked()

    def failing_write() -> None:
        with db.write() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        failing_write()
    assert not db.write_gate.locked()
    with db.read() as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 1
        assert not db.write_gate.locked()  # readers never take it
    db.dispose()


def test_writers_queue_on_the_gate_instead_of_failing(db: Database) -> None:
    order: list[str] = []
    first_in = threading.Event()

    def first() -> None:
        with db.write() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            first_in.set()
            time.sleep(0.2)
            order.append("first")

    def second() -> None:
        first_in.wait()
        with db.write() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
            order.append("second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert order == ["first", "second"]
    assert not db.write_gate.locked()
    db.dispose()
