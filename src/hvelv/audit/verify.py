"""Offline verification of the audit ledger against the database.

Recomputes the hash chain, the links between events, the Merkle checkpoints and their
signatures, the signed head, and checks that the filter columns agree with each event's
body. Reports the first event that was altered, removed or inserted.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select, text

from hvelv.audit import merkle
from hvelv.audit.ledger import GENESIS, checkpoint_message, head_message
from hvelv.audit.models import AuditCheckpoint, AuditHead

BATCH = 20_000

_SQLITE_MISMATCH = """
SELECT seq FROM audit_events WHERE
  json_extract(CAST(body AS TEXT), '$.seq') IS NOT seq
  OR json_extract(CAST(body AS TEXT), '$.ts') IS NOT ts
  OR json_extract(CAST(body AS TEXT), '$.actor') IS NOT actor
  OR json_extract(CAST(body AS TEXT), '$.action') IS NOT action
  OR json_extract(CAST(body AS TEXT), '$.outcome') IS NOT outcome
  OR json_extract(CAST(body AS TEXT), '$.project') IS NOT project_id
  OR json_extract(CAST(body AS TEXT), '$.target') IS NOT target
ORDER BY seq LIMIT 1
"""

_PG_MISMATCH = """
SELECT seq FROM audit_events, LATERAL (SELECT convert_from(body, 'UTF8')::jsonb AS j) AS b
WHERE (j->>'seq')::bigint IS DISTINCT FROM seq
  OR j->>'ts' IS DISTINCT FROM ts
  OR j->>'actor' IS DISTINCT FROM actor
  OR j->>'action' IS DISTINCT FROM action
  OR j->>'outcome' IS DISTINCT FROM outcome
  OR j->>'project' IS DISTINCT FROM project_id
  OR j->>'target' IS DISTINCT FROM target
ORDER BY seq LIMIT 1
"""


@dataclass(frozen=True)
class Problem:
    kind: str  # altered | removed | inserted | checkpoint | head
    seq: int
    message: str


@dataclass(frozen=True)
class Report:
    events: int
    checkpoints: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


Row = tuple[int, bytes, bytes, bytes]


def _rows(engine: Engine) -> Generator[Row, None, None]:
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        query = "SELECT seq, body, prev_hash, hash FROM audit_events ORDER BY seq"
        if engine.dialect.name == "sqlite":
            cursor = driver.cursor()
        else:
            cursor = driver.cursor(name="hvelv_audit_verify")
            cursor.itersize = BATCH
        try:
            cursor.execute(query)
            while True:
                batch = cursor.fetchmany(BATCH)
                if not batch:
                    break
                for seq, body, prev, digest in batch:
                    yield int(seq), bytes(body), bytes(prev), bytes(digest)
        finally:
            cursor.close()
            raw.rollback()
    finally:
        raw.close()


def _column_mismatch(engine: Engine) -> int | None:
    sql = _SQLITE_MISMATCH if engine.dialect.name == "sqlite" else _PG_MISMATCH
    with engine.connect() as conn:
        value = conn.execute(text(sql)).scalar()
    return None if value is None else int(value)


def verify(engine: Engine, public_key: Ed25519PublicKey) -> Report:
    """Verify the whole ledger; the report names the first problem found, if any."""
    rows = _rows(engine)
    try:
        return _verify(engine, public_key, rows)
    finally:
        rows.close()


def _verify(engine: Engine, public_key: Ed25519PublicKey, rows: Iterator[Row]) -> Report:
    with engine.connect() as conn:
        checkpoints = {cp.tree_size: cp for cp in conn.execute(select(AuditCheckpoint)).all()}
        head = conn.execute(select(AuditHead).where(AuditHead.id == 1)).one()
    # the column check runs in the database while this thread walks the chain
    with ThreadPoolExecutor(max_workers=1) as pool:
        columns = pool.submit(_column_mismatch, engine)
        return _walk(rows, checkpoints, head, public_key, columns)


def _walk(
    rows: Iterator[Row],
    checkpoints: dict[int, Any],
    head: Any,
    public_key: Ed25519PublicKey,
    columns: Future[int | None],
) -> Report:
    def first(problem: Problem | None) -> Problem | None:
        mismatch = columns.result()
        if mismatch is not None and (problem is None or mismatch < problem.seq):
            return Problem(
                "altered", mismatch, f"event {mismatch} was altered (columns disagree with body)"
            )
        return problem

    expected = 1
    last = GENESIS
    frontier: merkle.Frontier = []
    pending: Row | None = next(rows, None)
    seen = 0
    while pending is not None:
        seq, body, prev, digest = pending
        pending = next(rows, None)
        if seq != expected:
            gap = (
                f"event {expected} was"
                if seq == expected + 1
                else f"events {expected}..{seq - 1} were"
            )
            return Report(seen, 0, first(Problem("removed", expected, f"{gap} removed")))
        if sha256(prev + body).digest() != digest:
            return Report(seen, 0, first(Problem("altered", seq, f"event {seq} was altered")))
        if prev != last:
            if pending is None or pending[2] == last:
                link = Problem("inserted", seq, f"event {seq} was inserted")
            else:
                link = Problem(
                    "removed", seq, f"an event before {seq} was removed (chain link broken)"
                )
            return Report(seen, 0, first(link))
        # merkle.push, inlined: measured 5.4 s -> 4.2 s for 1M events (with the thread below)
        frontier.append((1, sha256(b"\x00" + digest).digest()))
        while len(frontier) >= 2 and frontier[-1][0] == frontier[-2][0]:
            size, right = frontier.pop()
            frontier[-1] = (2 * size, sha256(b"\x01" + frontier[-1][1] + right).digest())
        checkpoint = checkpoints.get(seq)
        if checkpoint is not None:
            cp_problem = _check_checkpoint(checkpoint, frontier, digest, public_key)
            if cp_problem is not None:
                return Report(seen, 0, first(cp_problem))
        last = digest
        seen += 1
        expected += 1
    problem: Problem | None = _check_head(head, seen, last, public_key)
    if problem is None:
        beyond = [size for size in checkpoints if size > seen]
        if beyond:
            problem = Problem(
                "removed", seen + 1, f"events after {seen} were removed (checkpoint {min(beyond)})"
            )
    return Report(seen, len(checkpoints), first(problem))


def _check_checkpoint(
    cp: Any, frontier: merkle.Frontier, digest: bytes, public_key: Ed25519PublicKey
) -> Problem | None:
    message = checkpoint_message(cp.tree_size, cp.root_hash, cp.chain_hash, cp.created_at)
    try:
        public_key.verify(cp.signature, message)
    except InvalidSignature:
        return Problem(
            "checkpoint", cp.tree_size, f"checkpoint {cp.tree_size} signature is invalid"
        )
    if merkle.root(frontier) != cp.root_hash or digest != cp.chain_hash:
        return Problem(
            "altered",
            cp.tree_size,
            f"events up to {cp.tree_size} differ from the signed checkpoint "
            f"(altered, inserted or removed before event {cp.tree_size})",
        )
    return None


def _check_head(head: Any, seen: int, last: bytes, public_key: Ed25519PublicKey) -> Problem | None:
    if head.seq == 0 and seen == 0:
        return None
    if head.signature is None:
        return Problem("head", head.seq, "the ledger head is not signed")
    try:
        public_key.verify(head.signature, head_message(head.seq, head.hash))
    except InvalidSignature:
        return Problem("head", head.seq, "the ledger head signature is invalid")
    if seen > head.seq:
        return Problem(
            "inserted", head.seq + 1, f"event {head.seq + 1} was inserted after the signed head"
        )
    if seen < head.seq:
        return Problem("removed", seen + 1, f"events {seen + 1}..{head.seq} were removed")
    if last != head.hash:
        return Problem("altered", seen, f"event {seen} does not match the signed head")
    return None
