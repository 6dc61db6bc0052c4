"""The consent ledger: append-only, hash-chained per project.

Each event's ``hash`` is ``SHA-256(prev_hash || body)`` where ``body`` is the canonical JSON of
the event (the audit ledger's :func:`hvelv.audit.ledger.canonical`). ``seq`` is dense per project:
write transactions are serialised (SQLite's write lock, PostgreSQL's advisory lock), so reading
the project's last row inside the transaction is safe. Rows are never updated or deleted.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from hvelv.audit.ledger import GENESIS, canonical, chain_hash, format_ts
from hvelv.consent.models import ConsentEventRow
from hvelv.db import batch

__all__ = ["CHANNELS", "IDENTITY_ASSURANCE", "ChainBroken", "NewEvent", "append", "verify"]

CHANNELS = ("web", "paper", "phone", "import", "system")
# eIDAS levels; "none" for system events (expiry, end of representation)
IDENTITY_ASSURANCE = ("none", "low", "substantial", "high")


class ChainBroken(Exception):
    """The consent ledger of a project does not verify; names the first bad ``seq``."""


@dataclass(frozen=True)
class NewEvent:
    participant_id: int
    pseudonym: str
    kind: str
    at: dt.datetime
    actor_kind: str
    actor_id: str
    channel: str
    assurance: str
    recorded_by: str
    template_version_id: str | None = None
    text_hash: str | None = None
    language: str | None = None
    choices: tuple[tuple[str, bool], ...] = ()
    scope: str | None = None


def _body(pid: str, seq: int, e: NewEvent) -> dict[str, Any]:
    return {
        "type": "hvelv-consent-event-v1",
        "project": pid,
        "seq": seq,
        "participant": e.pseudonym,
        "kind": e.kind,
        "at": format_ts(e.at),
        "actor": {"kind": e.actor_kind, "id": e.actor_id},
        "channel": e.channel,
        "assurance": e.assurance,
        "template_version": e.template_version_id,
        "text_hash": e.text_hash,
        "language": e.language,
        "choices": dict(e.choices),
        "scope": e.scope,
        "recorded_by": e.recorded_by,
    }


_HEAD = (
    select(ConsentEventRow.seq, ConsentEventRow.hash)
    .where(ConsentEventRow.project_id == bindparam("pid"))
    .order_by(ConsentEventRow.seq.desc())
    .limit(1)
)
_INSERT = insert(ConsentEventRow.metadata.tables[ConsentEventRow.__tablename__])


def head(session: Session, pid: str) -> tuple[int, bytes]:
    row = session.execute(_HEAD, {"pid": pid}).first()
    return (0, GENESIS) if row is None else (int(row.seq), bytes(row.hash))


def append(session: Session, pid: str, events: Sequence[NewEvent]) -> list[ConsentEventRow]:
    """Append events in the caller's (write) transaction; returns the new rows.

    The rows are written with one Core insert (pending ORM changes are flushed first); the
    returned objects carry the stored values but are not in the session."""
    session.flush()
    connection = session.connection()
    heads = batch.watch(session, _BATCH_KEY, _Heads)
    known = None if heads is None else heads.get(session, pid)
    if known is None:
        row = connection.execute(_HEAD, {"pid": pid}).first()
        known = (0, GENESIS) if row is None else (int(row.seq), bytes(row.hash))
    seq, prev = known
    values: list[dict[str, Any]] = []
    for e in events:
        seq += 1
        body = canonical(_body(pid, seq, e))
        digest = chain_hash(prev, body)
        values.append(
            {
                "project_id": pid,
                "seq": seq,
                "participant_id": e.participant_id,
                "kind": e.kind,
                "at": e.at,
                "actor_kind": e.actor_kind,
                "actor_id": e.actor_id,
                "channel": e.channel,
                "assurance": e.assurance,
                "template_version_id": e.template_version_id,
                "text_hash": e.text_hash,
                "language": e.language,
                "choices": dict(e.choices),
                "scope": e.scope,
                "recorded_by": e.recorded_by,
                "body": body,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    if values:
        connection.execute(_INSERT, values)
        if heads is not None:
            heads.heads[pid] = (seq, prev)
    return [ConsentEventRow(**v) for v in values]


_BATCH_KEY = "hvelv-consent-ledger"


def batch_head(session: Session, pid: str) -> int | None:
    """The seq of the newest event appended to ``pid``'s ledger by ``session``'s group-commit
    batch so far; None outside a batch or before the batch's first append to it."""
    heads = batch.watch(session, _BATCH_KEY, _Heads)
    known = None if heads is None else heads.get(session, pid)
    return None if known is None else known[0]


class _Heads:
    """Each project's ledger head as appended by a group-commit batch (a
    :class:`hvelv.db.batch.Watcher`): the batch holds the write lock, so after its first append
    to a project the head is known without a query; a rolled-back job takes its heads along."""

    def __init__(self) -> None:
        self.heads: dict[str, tuple[int, bytes]] = {}
        self.job = 0
        self.mark: dict[str, tuple[int, bytes]] = {}

    def get(self, session: Session, pid: str) -> tuple[int, bytes] | None:
        job = batch.current_job(session)
        if job != self.job:
            self.job, self.mark = job, dict(self.heads)
        return self.heads.get(pid)

    def job_failed(self, session: Session) -> None:
        if self.job == batch.current_job(session):
            self.heads, self.job = self.mark, 0

    def before_commit(self, session: Session) -> None:
        """Nothing to write: the heads live in the rows the batch already inserted."""

    def after_commit(self, committed: bool) -> None:
        self.heads = {}


def verify(session: Session, pid: str) -> int:
    """Recompute the project's chain; returns the number of events, raises :class:`ChainBroken`.

    Checks each body's hash and link, dense ``seq``, and that the indexed columns agree with the
    body (so an edited column is found even when the body was left alone).
    """
    prev = GENESIS
    expected = 1
    result = session.execute(
        select(ConsentEventRow)
        .where(ConsentEventRow.project_id == pid)
        .order_by(ConsentEventRow.seq)
        .execution_options(yield_per=1000)
    )
    try:
        for row in result.scalars():
            _check_row(row, prev, expected)
            prev = bytes(row.hash)
            expected += 1
    finally:
        result.close()  # a server-side cursor on PostgreSQL, also when a row fails
    return expected - 1


def _check_row(row: ConsentEventRow, prev: bytes, expected: int) -> None:
    if row.seq != expected or bytes(row.prev_hash) != prev:
        raise ChainBroken(f"consent event {row.seq}: broken link")
    if chain_hash(prev, bytes(row.body)) != bytes(row.hash):
        raise ChainBroken(f"consent event {row.seq}: hash does not match its body")
    body = json.loads(row.body)
    columns = {
        "kind": row.kind,
        "at": format_ts(row.at),
        "scope": row.scope,
        "template_version": row.template_version_id,
        "text_hash": row.text_hash,
        "choices": row.choices,
        "actor": {"kind": row.actor_kind, "id": row.actor_id},
    }
    if any(body[key] != value for key, value in columns.items()):
        raise ChainBroken(f"consent event {row.seq}: columns disagree with the body")
