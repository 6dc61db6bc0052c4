"""A table watch moves after a commit that wrote one of its tables, and only then."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hvelv.audit.ledger import AuditRecord
from hvelv.identity.models import AuthSession, User
from hvelv.platform import Platform
from tests.support.people import make_person


def test_orm_and_statement_writes_move_the_watch_after_commit(platform: Platform) -> None:
    watch = platform.db.watch(frozenset({"users", "auth_sessions"}))
    make_person(platform, "wanda")  # an ORM insert into users
    assert watch.generation == 1
    with platform.db.write() as session:
        user = session.execute(select(User).where(User.username == "wanda")).scalar_one()
        user.display_name = "Wanda"
        session.flush()
        assert watch.generation == 1  # flushed, not committed
    assert watch.generation == 2
    with platform.db.write() as session:
        session.execute(update(AuthSession).values(revoke_reason="test"))
    assert watch.generation == 3


def test_other_tables_reads_and_rollbacks_leave_it(platform: Platform) -> None:
    watch = platform.db.watch(frozenset({"users"}))
    platform.audit_now(AuditRecord(action="test.event", actor="local:test"))
    with platform.db.read() as session:
        session.execute(select(User)).all()
    session = platform.db.writer()
    session.execute(update(User).values(display_name="x"))
    session.rollback()
    session.close()
    assert watch.generation == 0


def test_the_group_commit_writer_moves_it_too(platform: Platform) -> None:
    watch = platform.db.watch(frozenset({"users"}))
    make_person(platform, "walt")

    def rename(session: Session) -> None:
        session.execute(update(User).where(User.username == "walt").values(display_name="W"))

    platform.batch.run(rename)
    assert watch.generation == 2
