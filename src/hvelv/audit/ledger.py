"""Appending to the audit ledger, in the caller's transaction.

Each event's ``hash`` is ``SHA-256(prev_hash || body)`` where ``body`` is the canonical
JSON of the event (sorted keys, no spaces, UTF-8). Every ``checkpoint_interval`` events a
Merkle tree head over all events so far is signed with the platform's Ed25519 key.

Writers serialise on the head row: SQLite write transactions begin IMMEDIATE, and on
PostgreSQL the head row is locked FOR UPDATE, so sequence numbers are dense and the
chain has no forks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from hvelv.audit import merkle
from hvelv.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from hvelv.db import batch

GENESIS = bytes(32)


class Outcome:
    SUCCESS = "success"
    DENIED = "denied"
    FAILED = "failed"


@dataclass(frozen=True)
class AuditRecord:
    """What happened; time and position are assigned when it is appended."""

    action: str
    actor: str
    outcome: str = Outcome.SUCCESS
    project_id: str | None = None
    target: str | None = None
    request_id: str | None = None
    client: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(seq: int, ts: str, record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": ts,
        "actor": record.actor,
        "action": record.action,
        "outcome": record.outcome,
        "project": record.project_id,
        "target": record.target,
        "request_id": record.request_id,
        "client": record.client,
        "details": record.details,
    }


def chain_hash(prev: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev + body).digest()


def checkpoint_message(tree_size: int, root_hash: bytes, chain: bytes, created_at: str) -> bytes:
    return canonical(
        {
            "type": "hvelv-audit-checkpoint-v1",
            "tree_size": tree_size,
            "root_hash": root_hash.hex(),
            "chain_hash": chain.hex(),
            "created_at": created_at,
        }
    )


def head_message(seq: int, digest: bytes) -> bytes:
    return canonical({"type": "hvelv-audit-head-v1", "seq": seq, "hash": digest.hex()})


@dataclass
class _Tail:
    """The chain's end while appending: position, hash, Merkle frontier, rows not yet written."""

    seq: int
    hash: bytes
    frontier: merkle.Frontier
    rows: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)

    def copy(self) -> _Tail:
        return _Tail(
            self.seq, self.hash, list(self.frontier), list(self.rows), list(self.checkpoints)
        )


_BATCH_KEY = "hvelv-audit-ledger"


class _Pending:
    """The audit events of one group-commit batch (a :class:`hvelv.db.batch.Watcher`): the head
    is read once, every job's events are chained in memory, and the rows, checkpoints and one
    signed head are written before the batch commits."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.tail: _Tail | None = None
        self.job = 0
        self.mark: _Tail | None = None  # the tail before the current job's first event

    def append(self, session: Session, records: Sequence[AuditRecord]) -> list[int]:
        if self.tail is None:
            head = self.ledger._lock_head(session)
            self.tail = _Tail(head.seq, head.hash, merkle.loads(head.frontier))
            session.expire(head)
        job = batch.current_job(session)
        if job != self.job:
            self.job, self.mark = job, self.tail.copy()
        return self.ledger._extend(self.tail, records)

    def job_failed(self, session: Session) -> None:
        if self.job == batch.current_job(session):
            self.tail, self.job, self.mark = self.mark, 0, None

    def before_commit(self, session: Session) -> None:
        if self.tail is not None:
            self.ledger._write(session, self.tail)

    def after_commit(self, committed: bool) -> None:
        self.tail = self.mark = None


class Ledger:
    def __init__(
        self, signing_key: Ed25519PrivateKey, key_id: str, checkpoint_interval: int
    ) -> None:
        self._key = signing_key
        self._key_id = key_id
        self.checkpoint_interval = checkpoint_interval

    def append(self, session: Session, records: Sequence[AuditRecord]) -> list[int]:
        """Append events in the session's transaction; returns their sequence numbers.

        In a group-commit batch (:mod:`hvelv.db.batch`) the events of all its jobs are chained
        in memory and written at the end with one head update and one signature; a job that
        is rolled back takes its events with it."""
        if not records:
            return []
        pending = batch.watch(session, _BATCH_KEY, lambda: _Pending(self))
        if pending is not None:
            return pending.append(session, records)
        head = self._lock_head(session)
        tail = _Tail(head.seq, head.hash, merkle.loads(head.frontier))
        seqs = self._extend(tail, records)
        self._write(session, tail)
        session.expire(head)
        return seqs

    def _lock_head(self, session: Session) -> AuditHead:
        lock = select(AuditHead).where(AuditHead.id == 1)
        if session.get_bind().dialect.name != "sqlite":
            lock = lock.with_for_update()
        return session.execute(lock).scalar_one()

    def _extend(self, tail: _Tail, records: Sequence[AuditRecord]) -> list[int]:
        """Chain ``records`` after ``tail`` in memory (rows and checkpoints to write)."""
        ts = format_ts(datetime.now(UTC))
        seqs: list[int] = []
        for record in records:
            tail.seq += 1
            body = canonical(event_body(tail.seq, ts, record))
            digest = chain_hash(tail.hash, body)
            tail.rows.append(
                {
                    "seq": tail.seq,
                    "ts": ts,
                    "actor": record.actor,
                    "action": record.action,
                    "project_id": record.project_id,
                    "target": record.target,
                    "outcome": record.outcome,
                    "body": body,
                    "prev_hash": tail.hash,
                    "hash": digest,
                }
            )
            merkle.push(tail.frontier, digest)
            if tail.seq % self.checkpoint_interval == 0:
                tail.checkpoints.append(
                    self._checkpoint(tail.seq, merkle.root(tail.frontier), digest, ts)
                )
            tail.hash = digest
            seqs.append(tail.seq)
        return seqs

    def _write(self, session: Session, tail: _Tail) -> None:
        if not tail.rows:
            return
        session.execute(insert(AuditEvent), tail.rows)
        if tail.checkpoints:
            session.execute(insert(AuditCheckpoint), tail.checkpoints)
        session.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(
                seq=tail.seq,
                hash=tail.hash,
                frontier=merkle.dumps(tail.frontier),
                key_id=self._key_id,
                signature=self._key.sign(head_message(tail.seq, tail.hash)),
            )
        )

    def record(self, session: Session, record: AuditRecord) -> int:
        return self.append(session, [record])[0]

    def checkpoint_now(self, session: Session) -> int | None:
        """Sign a checkpoint at the current head (e.g. before a backup); None if empty."""
        head = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one()
        if head.seq == 0 or session.get(AuditCheckpoint, head.seq) is not None:
            return None
        frontier = merkle.loads(head.frontier)
        values = self._checkpoint(
            head.seq, merkle.root(frontier), head.hash, format_ts(datetime.now(UTC))
        )
        session.execute(insert(AuditCheckpoint), [values])
        return head.seq

    def _checkpoint(
        self, tree_size: int, root_hash: bytes, chain: bytes, ts: str
    ) -> dict[str, Any]:
        message = checkpoint_message(tree_size, root_hash, chain, ts)
        return {
            "tree_size": tree_size,
            "root_hash": root_hash,
            "chain_hash": chain,
            "created_at": ts,
            "key_id": self._key_id,
            "signature": self._key.sign(message),
        }
