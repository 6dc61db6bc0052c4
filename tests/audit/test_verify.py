"""Tampering with the stored ledger is caught: altered, removed and inserted events."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text

from hvelv.audit.ledger import canonical, chain_hash
from hvelv.audit.verify import verify
from hvelv.platform import Platform
from tests.support.audit import fill, run_sql


def report(platform: Platform):  # type: ignore[no-untyped-def]
    return verify(platform.db.engine, platform.keyring.signing_public)


def test_intact_ledger_verifies(platform: Platform) -> None:
    fill(platform, 25)
    result = report(platform)
    assert result.ok, result.problem
    assert result.events == 25
    assert result.checkpoints == 2  # interval 10 in tests


def test_empty_ledger_verifies(platform: Platform) -> None:
    assert report(platform).ok


@pytest.mark.parametrize("column", ["actor", "action", "target", "outcome"])
def test_altered_filter_column_is_caught(platform: Platform, column: str) -> None:
    fill(platform, 25)
    run_sql(platform, f"UPDATE audit_events SET {column} = 'forged' WHERE seq = 13")  # noqa: S608
    problem = report(platform).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("altered", 13)


def test_altered_body_is_caught(platform: Platform) -> None:
    fill(platform, 25)
    forged = canonical({"seq": 7, "forged": True})
    run_sql(platform, "UPDATE audit_events SET body = :b WHERE seq = 7", b=forged)
    problem = report(platform).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("altered", 7)
    assert "event 7" in problem.message


def test_removed_event_is_caught(platform: Platform) -> None:
    fill(platform, 25)
    run_sql(platform, "DELETE FROM audit_events WHERE seq = 5")
    problem = report(platform).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("removed", 5)


def test_removed_tail_is_caught(platform: Platform) -> None:
    fill(platform, 25)
    run_sql(platform, "DELETE FROM audit_events WHERE seq > 22")
    problem = report(platform).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("removed", 23)


def test_inserted_event_with_valid_looking_hash_is_caught(platform: Platform) -> None:
    """An attacker appends a well-formed event chained to the last one: the signed head
    does not cover it."""
    fill(platform, 25)
    with platform.db.engine.connect() as conn:
        last = conn.execute(text("SELECT hash FROM audit_events WHERE seq = 25")).scalar_one()
    body = canonical(
        {
            "seq": 26,
            "ts": "2026-01-01T00:00:00.000000Z",
            "actor": "user:evil",
            "action": "test.event",
            "outcome": "success",
            "project": None,
            "target": None,
            "request_id": None,
            "client": None,
            "details": {},
        }
    )
    run_sql(
        platform,
        "INSERT INTO audit_events (seq, ts, actor, action, project_id, target, outcome, body, "
        "prev_hash, hash) VALUES (26, '2026-01-01T00:00:00.000000Z', 'user:evil', 'test.event', "
        "NULL, NULL, 'success', :body, :prev, :hash)",
        body=body,
        prev=last,
        hash=chain_hash(bytes(last), body),
    )
    problem = report(platform).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("inserted", 26)


def test_inserted_event_in_the_middle_is_caught(platform: Platform) -> None:
    """Shift events up and slip one in: caught at the inserted position."""
    fill(platform, 25)
    with platform.db.engine.connect() as conn:
        prev = conn.execute(text("SELECT hash FROM audit_events WHERE seq = 9")).scalar_one()
    run_sql(platform, "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 10")
    run_sql(platform, "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000")
    body = canonical({"seq": 10, "forged": True})
    run_sql(
        platform,
        "INSERT INTO audit_events (seq, ts, actor, action, project_id, target, outcome, body, "
        "prev_hash, hash) VALUES (10, 'x', 'user:evil', 'test.event', NULL, NULL, 'success', "
        ":body, :prev, :hash)",
        body=body,
        prev=prev,
        hash=chain_hash(bytes(prev), body),
    )
    problem = report(platform).problem
    assert problem is not None
    assert problem.seq == 10
    assert problem.kind in {"inserted", "altered"}


def test_recomputed_chain_is_caught_by_signed_checkpoint(platform: Platform) -> None:
    """Rewrite event 3 and recompute every later hash: only signatures can tell."""
    fill(platform, 25)
    with platform.db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT seq, body, prev_hash FROM audit_events ORDER BY seq")
        ).all()
    prev = bytes(rows[1].prev_hash)
    prev = hashlib.sha256(prev + bytes(rows[1].body)).digest()
    for seq, body, _ in rows[2:]:
        new_body = bytes(body).replace(b'"note":"', b'"note":"X') if seq == 3 else bytes(body)
        digest = chain_hash(prev, new_body)
        run_sql(
            platform,
            "UPDATE audit_events SET body = :b, prev_hash = :p, hash = :h WHERE seq = :s",
            b=new_body,
            p=prev,
            h=digest,
            s=seq,
        )
        prev = digest
    problem = report(platform).problem
    assert problem is not None
    assert problem.seq == 10  # the first signed checkpoint after the change
    assert "checkpoint" in problem.message


def test_forged_checkpoint_signature_is_caught(platform: Platform) -> None:
    fill(platform, 25)
    run_sql(
        platform, "UPDATE audit_checkpoints SET signature = :s WHERE tree_size = 20", s=bytes(64)
    )
    problem = report(platform).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("checkpoint", 20)


def test_forged_head_is_caught(platform: Platform) -> None:
    fill(platform, 5)
    run_sql(platform, "UPDATE audit_head SET seq = 4")
    problem = report(platform).problem
    assert problem is not None
    assert problem.kind == "head"
