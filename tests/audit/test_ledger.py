"""Appending: dense sequence numbers, chained hashes, checkpoints, same-transaction writes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from hvelv.audit import merkle
from hvelv.audit.ledger import GENESIS, AuditRecord, chain_hash
from hvelv.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from hvelv.platform import Platform


def test_append_chains_and_checkpoints(platform: Platform) -> None:
    with platform.db.write() as session:
        seqs = platform.ledger.append(
            session, [AuditRecord(action="a", actor="user:x", details={"n": n}) for n in range(12)]
        )
    assert seqs == list(range(1, 13))
    with platform.db.read() as session:
        rows = list(session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars())
        prev = GENESIS
        for row in rows:
            assert row.prev_hash == prev
            assert row.hash == chain_hash(prev, row.body)
            assert json.loads(row.body)["seq"] == row.seq
            prev = row.hash
        checkpoint = session.get(AuditCheckpoint, 10)
        assert checkpoint is not None
        assert checkpoint.root_hash == merkle.tree_root([r.hash for r in rows[:10]])
        head = session.get(AuditHead, 1)
        assert head is not None
        assert head.seq == 12


def test_event_is_written_in_the_callers_transaction(platform: Platform) -> None:
    def failing_change() -> None:
        with platform.db.write() as session:
            platform.ledger.record(session, AuditRecord(action="a", actor="user:x"))
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    with platform.db.read() as session:
        assert session.execute(select(func.count()).select_from(AuditEvent)).scalar() == 0
        head = session.get(AuditHead, 1)
        assert head is not None
        assert head.seq == 0


def test_checkpoint_now(platform: Platform) -> None:
    with platform.db.write() as session:
        assert platform.ledger.checkpoint_now(session) is None
        platform.ledger.append(session, [AuditRecord(action="a", actor="u")] * 3)
    with platform.db.write() as session:
        assert platform.ledger.checkpoint_now(session) == 3
        assert platform.ledger.checkpoint_now(session) is None
