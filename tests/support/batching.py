"""Helpers for group-commit tests: hold the batch writer so that jobs queue into one batch, and
two scratch tables whose deferred foreign key makes a commit fail (on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.orm import Session

from hvelv.db.batch import BatchWriter
from hvelv.db.engine import Database


@contextmanager
def held(writer: BatchWriter) -> Iterator[Future[None]]:
    """The writer busy with a job that waits until the block ends: jobs submitted inside the
    block all wait in the queue and go into the next batch together."""
    started, release = threading.Event(), threading.Event()

    def wait(session: Session) -> None:
        started.set()
        assert release.wait(30), "the test did not release the writer"

    blocker = writer.submit(wait)
    assert started.wait(30), "the batch writer did not start"
    try:
        yield blocker
    finally:
        release.set()
    blocker.result(30)


@contextmanager
def scratch_tables(db: Database) -> Iterator[None]:
    """``batch_item(id, v)`` and ``batch_child(id, parent)`` whose parent is a deferred foreign
    key to ``batch_item``: a child without its parent fails the commit, not the insert."""
    with db.write() as session:
        session.execute(text("CREATE TABLE batch_item (id INTEGER PRIMARY KEY, v VARCHAR(20))"))
        session.execute(
            text(
                "CREATE TABLE batch_child (id INTEGER PRIMARY KEY, parent INTEGER "
                "REFERENCES batch_item (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    try:
        yield
    finally:
        with db.write() as session:
            session.execute(text("DROP TABLE batch_child"))
            session.execute(text("DROP TABLE batch_item"))


def insert_item(session: Session, item_id: int, value: str = "x") -> None:
    session.execute(text("INSERT INTO batch_item VALUES (:i, :v)"), {"i": item_id, "v": value})


def orphan_child(session: Session) -> None:
    """A row that violates the deferred foreign key: the commit fails."""
    session.execute(text("INSERT INTO batch_child VALUES (1, 424242)"))


def items(db: Database) -> list[int]:
    with db.read() as session:
        return list(session.execute(text("SELECT id FROM batch_item ORDER BY id")).scalars())
