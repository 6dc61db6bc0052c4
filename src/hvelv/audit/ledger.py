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


class Ledger:
    def __init__(
        self, signing_key: Ed25519PrivateKey, key_id: str, checkpoint_interval: int
    ) -> None:
        self._key = signing_key
        self._key_id = key_id
        self.checkpoint_interval = checkpoint_interval

    def append(self, session: Session, records: Sequence[AuditRecord]) -> list[int]:
        """Append events in the session's transaction; returns their sequence numbers."""
        if not records:
            return []
        lock = select(AuditHead).where(AuditHead.id == 1)
        if session.get_bind().dialect.name != "sqlite":
            lock = lock.with_for_update()
        head = session.execute(lock).scalar_one()
        seq, prev = head.seq, head.hash
        frontier = merkle.loads(head.frontier)
        ts = format_ts(datetime.now(UTC))
        rows: list[dict[str, Any]] = []
        checkpoints: list[dict[str, Any]] = []
        for record in records:
            seq += 1
            body = canonical(event_body(seq, ts, record))
            digest = chain_hash(prev, body)
            rows.append(
                {
                    "seq": seq,
                    "ts": ts,
                    "actor": record.actor,
                    "action": record.action,
                    "project_id": record.project_id,
                    "target": record.target,
                    "outcome": record.outcome,
                    "body": body,
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            merkle.push(frontier, digest)
            if seq % self.checkpoint_interval == 0:
                checkpoints.append(self._checkpoint(seq, merkle.root(frontier), digest, ts))
            prev = digest
        session.execute(insert(AuditEvent), rows)
        if checkpoints:
            session.execute(insert(AuditCheckpoint), checkpoints)
        session.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(
                seq=seq,
                hash=prev,
                frontier=merkle.dumps(frontier),
                key_id=self._key_id,
                signature=self._key.sign(head_message(seq, prev)),
            )
        )
        session.expire(head)
        return [r["seq"] for r in rows]

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
