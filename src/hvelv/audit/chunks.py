"""Verification of one aligned chunk of the audit ledger (in a worker process or in-process).

The ledger is cut into chunks of ``C = 2**k`` events: chunk ``j`` holds the events
``j*C + 1 .. (j+1)*C``. Given the stored hashes, every check inside a chunk is independent
of the others: a chunk's events hash correctly and link to each other, its checkpoints are
signed and carry its chain hash, and its Merkle leaves form a perfect subtree (a complete
chunk) whose root and whose local frontier at each checkpoint let the caller stitch the
RFC 6962 tree heads together. The chunk also reports the first event in its range whose
filter columns disagree with its body.

A chunk only answers *clean or not*: the caller re-walks the first chunk that is not clean
with the exact sequential walk, which names the first problem and words it.

On SQLite the walk and the column check run in native code (``hvelv.audit._walk``, built
from ``_walk.c`` at install) when it is there: about 0.4 instead of 3.3 us of CPU per
event. It proves a chunk clean or leaves the verdict to this module's code: a chain that
is not exactly right is handed back as not clean, and a body it cannot read with
certainty makes the exact SQL column check run for the chunk.
"""

from __future__ import annotations

import gc
import importlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hvelv.audit import merkle
from hvelv.audit.ledger import checkpoint_message


def _load_native() -> Any:
    try:
        return importlib.import_module("hvelv.audit._walk")
    except ImportError:  # not built (no compiler or headers at install): the Python walk
        return None


native: Any = _load_native()

FETCH = 1024  # rows per fetchmany: measured faster than 20,000 (the batch stays in cache)

# the chain rows of a chunk, in seq order (a CASE guarding prev_hash's length and type in SQL,
# to fetch prev_hash || body as one value, measured twice as slow as the plain columns)
_CHAIN = "SELECT seq, prev_hash, body, hash FROM audit_events WHERE {range} ORDER BY seq"

# the exact column check (what verify has always checked, per column)
SQLITE_COLUMNS = """
  json_extract(CAST(body AS TEXT), '$.seq') IS NOT seq
  OR json_extract(CAST(body AS TEXT), '$.ts') IS NOT ts
  OR json_extract(CAST(body AS TEXT), '$.actor') IS NOT actor
  OR json_extract(CAST(body AS TEXT), '$.action') IS NOT action
  OR json_extract(CAST(body AS TEXT), '$.outcome') IS NOT outcome
  OR json_extract(CAST(body AS TEXT), '$.project') IS NOT project_id
  OR json_extract(CAST(body AS TEXT), '$.target') IS NOT target
"""
# a cheaper pre-filter: one JSON parse rendering the seven values as a JSON array, compared
# with the columns rendered the same way. Equal text means equal values (each column value
# has one rendering, and json_extract looks keys up as the exact check does), so only rows
# it flags go on to the exact check; it raises on a BLOB column, and then the exact check
# alone runs.
_SQLITE_FAST = (
    "json_extract(CAST(body AS TEXT), '$.seq', '$.ts', '$.actor', '$.action', '$.outcome', "
    "'$.project', '$.target') IS NOT json_array(seq, ts, actor, action, outcome, project_id, "
    "target)"
)
# by the chunk's seq range (half open, see _range): every row is checked by the chunk that
# owns its seq, so the least of the chunks' answers is the least seq whose columns disagree.
# (By rowid ranges, a plain table scan, was ~10% faster but missed a row whose rowid lay
# beyond the head, e.g. one inserted with a fractional seq.)
_SQLITE_MISMATCH = "SELECT min(seq) FROM audit_events WHERE {range} AND {checks}"

PG_COLUMNS = """
  (j->>'seq')::bigint IS DISTINCT FROM seq
  OR j->>'ts' IS DISTINCT FROM ts
  OR j->>'actor' IS DISTINCT FROM actor
  OR j->>'action' IS DISTINCT FROM action
  OR j->>'outcome' IS DISTINCT FROM outcome
  OR j->>'project' IS DISTINCT FROM project_id
  OR j->>'target' IS DISTINCT FROM target
"""
# OFFSET 0 keeps the planner from inlining the subquery into each of the seven references
# (seven JSON parses per row): measured 23 -> 4-6 us/event
_PG_MISMATCH = (
    "SELECT seq FROM audit_events, "
    "LATERAL (SELECT convert_from(body, 'UTF8')::jsonb AS j OFFSET 0) AS b "
    "WHERE {range} AND ({checks}) ORDER BY seq LIMIT 1"
)

# (tree_size, root_hash, chain_hash, created_at, signature)
CheckpointRow = tuple[int, bytes, bytes, str, bytes]


@dataclass(frozen=True)
class ChunkTask:
    index: int
    lo: int  # first seq of the chunk
    hi: int  # last seq of the chunk
    open_below: bool  # the first chunk also takes any rows below lo
    open_above: bool  # the last chunk also takes any rows above hi
    checkpoints: tuple[CheckpointRow, ...]  # those with lo <= tree_size <= hi


@dataclass(frozen=True)
class ChunkResult:
    index: int
    clean: bool  # rows exactly lo..hi, hashes, inner links, checkpoint signatures, chain hashes
    first_prev: bytes  # prev_hash of event lo (when clean)
    last_hash: bytes  # hash of event hi (when clean)
    frontier: merkle.Frontier  # Merkle frontier of the chunk's own leaves (when clean)
    checkpoint_frontiers: dict[int, merkle.Frontier]  # tree_size -> local frontier (when clean)
    column_mismatch: int | None  # first seq in the range whose columns disagree with the body


_DIRTY: tuple[bytes, bytes, merkle.Frontier, dict[int, merkle.Frontier]] = (b"", b"", [], {})


def _range(task: ChunkTask, mark: str) -> tuple[str, tuple[int, ...]]:
    """The chunk's rows: ``lo <= seq < hi + 1``, half open, so that a seq that is not an
    integer (SQLite stores a REAL in a BIGINT column) still falls in exactly one chunk."""
    clauses: list[str] = []
    params: list[int] = []
    if not task.open_below:
        clauses.append(f"seq >= {mark}")
        params.append(task.lo)
    if not task.open_above:
        clauses.append(f"seq < {mark}")
        params.append(task.hi + 1)
    return (" AND ".join(clauses) or "1 = 1"), tuple(params)


def run_chunk(
    conn: Any,
    dialect: str,
    task: ChunkTask,
    public_key: Ed25519PublicKey,
    path: str | None = None,
) -> ChunkResult:
    """Verify one chunk on a DB-API connection (sqlite3 or psycopg) of its own; ``path``:
    the SQLite file, for the native walk."""
    sqlite = dialect == "sqlite"
    if sqlite and path is not None and native is not None:
        return _native_chunk(conn, path, task, public_key)
    where, params = _range(task, "?" if sqlite else "%s")
    if sqlite:
        cursor = conn.cursor()
    else:
        # binary: bytea arrives as raw bytes, not hex text (measured 6.5-7.8 -> 3.5-5.4 us/event)
        cursor = conn.cursor(name=f"hvelv_audit_chunk_{task.index}", binary=True)
        cursor.itersize = FETCH
    try:
        cursor.execute(_CHAIN.format(range=where), params)
        try:
            outcome = _chain(cursor, task, public_key)
        except TypeError:  # an odd row (a NULL or text body or hash): the walk words it
            outcome = None
    finally:
        cursor.close()
    mismatch = _column_mismatch(conn, sqlite, where, params)
    if not sqlite:
        conn.rollback()
    if outcome is None:
        return ChunkResult(task.index, False, *_DIRTY, mismatch)
    return ChunkResult(task.index, True, *outcome, mismatch)


def _native_chunk(
    conn: Any, path: str, task: ChunkTask, public_key: Ed25519PublicKey
) -> ChunkResult:
    try:
        walked = native.walk(
            path,
            task.lo,
            task.hi,
            task.open_below,
            task.open_above,
            [c[0] for c in task.checkpoints],
        )
    except RuntimeError:  # SQLite refused the file (busy, unreadable): the Python walk says why
        return run_chunk(conn, "sqlite", task, public_key)
    outcome: tuple[bytes, bytes, merkle.Frontier, dict[int, merkle.Frontier]] | None = None
    columns_ok = False
    if walked is not None:
        first_prev, last, frontier, marked, columns_ok = walked
        at_mark = {cp[0]: mark for cp, mark in zip(task.checkpoints, marked, strict=True)}
        frontiers = _checkpoints(
            task, public_key, lambda size: at_mark[size][0], lambda size: at_mark[size][1]
        )
        if frontiers is not None:
            outcome = (first_prev, last, frontier, frontiers)
    # the exact check where the native walk proved nothing, by seq (the range it walked), so
    # that every row is checked by the chunk that owns its seq
    mismatch = None
    if outcome is None or not columns_ok:
        where, params = _range(task, "?")
        mismatch = _column_mismatch(conn, True, where, params)
    if outcome is None:
        return ChunkResult(task.index, False, *_DIRTY, mismatch)
    return ChunkResult(task.index, True, *outcome, mismatch)


def _chain(
    cursor: Any, task: ChunkTask, public_key: Ed25519PublicKey
) -> tuple[bytes, bytes, merkle.Frontier, dict[int, merkle.Frontier]] | None:
    expected = task.lo
    first_prev = b""
    last: bytes | None = None
    chain: list[bytes] = []
    fetch = cursor.fetchmany
    while batch := fetch(FETCH):
        seqs, prevs, bodies, stored = zip(*batch, strict=True)
        count = len(seqs)
        # seqs ascend (ORDER BY over a unique key): expected..expected+count-1 means no gap
        if seqs != tuple(range(expected, expected + count)):
            return None
        digests = [sha256(prev + body).digest() for prev, body in zip(prevs, bodies, strict=True)]
        if digests != list(stored):
            return None
        if last is None:
            first_prev = prevs[0]
            links = prevs[1:] == stored[:-1]
        else:
            links = prevs == (last, *stored[:-1])
        if not links:
            return None
        last = stored[-1]
        chain.extend(stored)
        expected += count
    if last is None or expected != task.hi + 1:
        return None
    levels = _levels(chain)
    frontiers = _checkpoints(
        task,
        public_key,
        lambda size: chain[size - task.lo],
        lambda size: _frontier(levels, size - task.lo + 1),
    )
    if frontiers is None:
        return None
    return first_prev, last, _frontier(levels, len(chain)), frontiers


def _checkpoints(
    task: ChunkTask,
    public_key: Ed25519PublicKey,
    chain_at: Callable[[int], bytes],
    frontier_at: Callable[[int], merkle.Frontier],
) -> dict[int, merkle.Frontier] | None:
    """The local frontier at each of the chunk's checkpoints, or None when a signature or a
    signed chain hash does not hold (``chain_at(size)``: the chain hash of event ``size``)."""
    frontiers: dict[int, merkle.Frontier] = {}
    for tree_size, root_hash, chain_hash, created_at, signature in task.checkpoints:
        message = checkpoint_message(tree_size, root_hash, chain_hash, created_at)
        try:
            public_key.verify(signature, message)
        except InvalidSignature:
            return None
        if chain_at(tree_size) != chain_hash:
            return None
        frontiers[tree_size] = frontier_at(tree_size)
    return frontiers


def _levels(digests: list[bytes]) -> list[list[bytes]]:
    """Every complete node of the chunk's Merkle tree, level by level from the leaves."""
    level = [sha256(b"\x00" + digest).digest() for digest in digests]
    levels = [level]
    while len(level) >= 2:
        pairs = iter(level)
        level = [
            sha256(b"\x01" + left + right).digest()
            for left, right in zip(pairs, pairs, strict=False)
        ]
        levels.append(level)
    return levels


def _frontier(levels: list[list[bytes]], count: int) -> merkle.Frontier:
    """The frontier (perfect subtrees, largest first) of the chunk's first ``count`` leaves."""
    frontier: merkle.Frontier = []
    start = 0
    for height in range(len(levels) - 1, -1, -1):
        size = 1 << height
        if count - start >= size:
            frontier.append((size, levels[height][start >> height]))
            start += size
    return frontier


def _column_mismatch(conn: Any, sqlite: bool, where: str, params: tuple[int, ...]) -> int | None:
    cursor = conn.cursor()
    try:
        if sqlite:
            try:
                checks = f"({_SQLITE_FAST}) AND ({SQLITE_COLUMNS})"
                cursor.execute(_SQLITE_MISMATCH.format(range=where, checks=checks), params)
            except sqlite3.OperationalError:  # json_array refuses a BLOB column
                checks = f"({SQLITE_COLUMNS})"
                cursor.execute(_SQLITE_MISMATCH.format(range=where, checks=checks), params)
        else:
            cursor.execute(_PG_MISMATCH.format(range=where, checks=PG_COLUMNS), params)
        row = cursor.fetchone()
    finally:
        cursor.close()
    return None if row is None or row[0] is None else int(row[0])


def push_node(frontier: merkle.Frontier, size: int, node: bytes) -> None:
    """Append a perfect subtree of ``size`` leaves (aligned at the frontier's end), in place."""
    frontier.append((size, node))
    while len(frontier) >= 2 and frontier[-1][0] == frontier[-2][0]:
        right_size, right = frontier.pop()
        _, left = frontier.pop()
        frontier.append((2 * right_size, merkle.node_hash(left, right)))


# --- worker processes: one connection each, opened by the pool's initializer -------------

_worker: tuple[Any, str, Ed25519PublicKey, str] | None = None


def open_connection(dialect: str, url: str) -> Any:
    """A read connection of this process's own (a sqlite3 path or a libpq URL)."""
    if dialect == "sqlite":
        conn = sqlite3.connect(url, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only = 1")
        # read the file through a mapping (SQLite caps the size at its compile-time limit):
        # measured 0.2 instead of 0.5-0.9 us/event of system time in read() calls
        conn.execute("PRAGMA mmap_size = 2147418112")
        return conn
    import psycopg

    return psycopg.connect(url)


def init_worker(dialect: str, url: str, public_key: bytes) -> None:
    global _worker
    # a forked worker inherits the parent's heap: keep the collector from walking it (and
    # from touching its pages); the chunk loop makes no reference cycles
    gc.freeze()
    gc.disable()
    _worker = (
        open_connection(dialect, url),
        dialect,
        Ed25519PublicKey.from_public_bytes(public_key),
        url,
    )


def worker_chunk(task: ChunkTask) -> ChunkResult:
    assert _worker is not None, "init_worker was not run in this process"
    conn, dialect, public_key, url = _worker
    return run_chunk(conn, dialect, task, public_key, url if dialect == "sqlite" else None)
