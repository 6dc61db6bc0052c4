"""Group commit (hvelv.db.batch): jobs queued together run in one transaction, each in its own
savepoint; a failing job is rolled back alone, a failing commit fails every job of its batch;
audit events of a batch stay one dense, verifiable chain. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hvelv.audit.ledger import AuditRecord
from hvelv.audit.models import AuditEvent
from hvelv.audit.verify import verify
from hvelv.db import batch
from hvelv.db.batch import BatchWriter
from hvelv.platform import Platform
from tests.support.batching import held, insert_item, items, orphan_child, scratch_tables


def _results(futures: list[Future[Any]]) -> list[Any]:
    out: list[Any] = []
    for future in futures:
        try:
            out.append(future.result(30))
        except Exception as exc:
            out.append(type(exc))
    return out


def test_a_failing_job_is_rolled_back_alone(platform: Platform) -> None:
    writer = platform.batch
    with scratch_tables(platform.db):
        before = writer.batches

        def insert(item_id: int, fail: bool = False) -> Any:
            def job(session: Session) -> int:
                insert_item(session, item_id)
                if fail:
                    raise ValueError("refused")
                return batch.current_job(session)

            return job

        with held(writer):
            futures = [
                writer.submit(insert(1)),
                writer.submit(insert(2, fail=True)),  # raises after its insert
                writer.submit(insert(3)),
                writer.submit(insert(1)),  # duplicate key: a database error inside the batch
                writer.submit(insert(5)),
            ]
        assert _results(futures) == [1, ValueError, 3, IntegrityError, 5]
        assert items(platform.db) == [1, 3, 5]
        assert writer.batches == before + 2  # the holding job's batch, then all five together


def test_a_failed_commit_fails_every_job_of_the_batch(platform: Platform) -> None:
    writer = platform.batch
    with scratch_tables(platform.db):
        with held(writer):
            futures = [
                writer.submit(lambda s: insert_item(s, 1)),
                writer.submit(orphan_child),  # fine until the deferred check at commit
                writer.submit(lambda s: insert_item(s, 3)),
            ]
        assert _results(futures) == [IntegrityError] * 3
        assert items(platform.db) == []
        writer.run(lambda s: insert_item(s, 4))  # the writer goes on
        assert items(platform.db) == [4]


def test_results_only_after_the_commit(platform: Platform) -> None:
    """A caller's result arrives after its change is committed: another connection sees it."""
    with scratch_tables(platform.db):
        for n in range(1, 4):
            platform.batch.run(lambda s, n=n: insert_item(s, n))
            assert items(platform.db)[-1] == n


def test_audit_events_of_a_batch_form_one_verifiable_chain(platform: Platform) -> None:
    writer = platform.batch

    def audit(name: str, count: int, fail: bool = False) -> Any:
        def job(session: Session) -> list[int]:
            seqs = platform.ledger.append(
                session, [AuditRecord(action=f"test.{name}", actor="local:test")] * count
            )
            if fail:
                raise ValueError("refused")
            return seqs

        return job

    platform.audit_now(AuditRecord(action="test.before", actor="local:test"))
    with held(writer):
        futures = [
            writer.submit(audit("a", 2)),
            writer.submit(audit("b", 3, fail=True)),
            writer.submit(audit("c", 1)),
            writer.submit(audit("d", 12)),  # passes a checkpoint (every 10 events in tests)
        ]
    assert _results(futures) == [[2, 3], ValueError, [4], list(range(5, 17))]
    platform.audit_now(AuditRecord(action="test.after", actor="local:test"))
    with platform.db.read() as session:
        actions = list(
            session.execute(text("SELECT action FROM audit_events ORDER BY seq")).scalars()
        )
        assert session.get(AuditEvent, 17) is not None
    assert actions == ["test.before", "test.a", "test.a", "test.c", *["test.d"] * 12, "test.after"]
    report = verify(platform.db.engine, platform.keyring.signing_public)
    assert report.ok, report.problem
    assert report.events == 17
    assert report.checkpoints == 1


def test_concurrent_jobs_keep_their_order_and_their_chain(platform: Platform) -> None:
    """Many threads, each submitting its own sequence of jobs: every job committed once, each
    thread's jobs in its order, the audit chain dense and verified."""
    writer = platform.batch
    threads, rounds = 8, 15
    seen: dict[int, list[int]] = {t: [] for t in range(threads)}
    errors: list[BaseException] = []
    with scratch_tables(platform.db):

        def client(t: int) -> None:
            try:
                for r in range(rounds):
                    item = t * 1000 + r

                    def job(session: Session, item: int = item) -> int:
                        insert_item(session, item, value=f"t{t}")
                        (seq,) = platform.ledger.append(
                            session, [AuditRecord(action="test.job", actor=f"t{t}")]
                        )
                        return seq

                    seen[t].append(writer.run(job))
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert not errors
        assert len(items(platform.db)) == threads * rounds
    for seqs in seen.values():
        assert seqs == sorted(seqs)  # each thread's jobs committed in its order
    assert sorted(s for seqs in seen.values() for s in seqs) == list(range(1, threads * rounds + 1))
    report = verify(platform.db.engine, platform.keyring.signing_public)
    assert report.ok, report.problem
    assert report.events == threads * rounds


def test_close_finishes_queued_jobs_and_refuses_new_ones(platform: Platform) -> None:
    writer = BatchWriter(platform.db)
    with scratch_tables(platform.db):
        with held(writer):
            queued = writer.submit(lambda s: insert_item(s, 7))
        writer.close()
        assert queued.done()
        assert items(platform.db) == [7]
        with pytest.raises(RuntimeError, match="closed"):
            writer.submit(lambda s: None)
