"""The chunked verifier reports exactly what the sequential walk reports, for every kind of
tampering at a chunk boundary and inside a chunk, in-process and with worker processes, with
the native chunk walk (SQLite) and with the Python one."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from hvelv.audit import chunks
from hvelv.audit.ledger import GENESIS, AuditRecord, canonical, chain_hash, checkpoint_message
from hvelv.audit.verify import Report, verify, verify_sequential
from hvelv.platform import Platform
from tests.support.audit import fill, run_sql


@pytest.fixture(autouse=True, params=["native", "python"])
def walk(
    request: pytest.FixtureRequest, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Every test with each chunk walk (forked workers inherit the choice)."""
    if request.param == "python":
        monkeypatch.setattr(chunks, "native", None)
    elif platform.db.engine.dialect.name != "sqlite":
        pytest.skip("the native walk reads SQLite files")
    elif chunks.native is None:
        if os.environ.get("HVELV_REQUIRE_BACKENDS") == "1":
            pytest.fail("hvelv.audit._walk was not built (gcc, libsqlite3-dev, libssl-dev)")
        pytest.skip("hvelv.audit._walk was not built")
    return request.param


def sequential(platform: Platform) -> Report:
    return verify_sequential(platform.db.engine, platform.keyring.signing_public)


def chunked(platform: Platform, chunk_size: int, workers: int) -> Report:
    return verify(
        platform.db.engine,
        platform.keyring.signing_public,
        chunk_size=chunk_size,
        workers=workers,
    )


# --- tampering (checkpoint interval 10 in tests; 40 events) ------------------------------


def alter_body(platform: Platform, seq: int) -> None:
    forged = canonical({"seq": seq, "forged": True})
    run_sql(platform, "UPDATE audit_events SET body = :b WHERE seq = :s", b=forged, s=seq)


def remove(platform: Platform, seq: int) -> None:
    run_sql(platform, "DELETE FROM audit_events WHERE seq = :s", s=seq)


def remove_range(platform: Platform, seq: int) -> None:
    run_sql(platform, "DELETE FROM audit_events WHERE seq BETWEEN :s AND :e", s=seq, e=seq + 5)


def insert(platform: Platform, seq: int) -> None:
    """Shift the events from ``seq`` up by one and slip a well-chained event in."""
    with platform.db.engine.connect() as conn:
        prev = conn.execute(
            text("SELECT hash FROM audit_events WHERE seq = :s"), {"s": seq - 1}
        ).scalar_one_or_none()
    prev = GENESIS if prev is None else prev
    run_sql(platform, "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= :s", s=seq)
    run_sql(platform, "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000")
    body = canonical({"seq": seq, "forged": True})
    run_sql(
        platform,
        "INSERT INTO audit_events (seq, ts, actor, action, project_id, target, outcome, body, "
        "prev_hash, hash) VALUES (:seq, 'x', 'user:evil', 'test.event', NULL, NULL, 'success', "
        ":body, :prev, :hash)",
        seq=seq,
        body=body,
        prev=prev,
        hash=chain_hash(bytes(prev), body),
    )


def alter_column(platform: Platform, seq: int) -> None:
    run_sql(platform, "UPDATE audit_events SET actor = 'forged' WHERE seq = :s", s=seq)


def rechain(platform: Platform, seq: int) -> None:
    """Rewrite event ``seq`` and recompute every later hash: only a checkpoint tells."""
    with platform.db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT seq, body, prev_hash FROM audit_events WHERE seq >= :s ORDER BY seq"),
            {"s": seq},
        ).all()
    prev = bytes(rows[0].prev_hash)
    for row_seq, body, _ in rows:
        new_body = bytes(body).replace(b'"note":"', b'"note":"X') if row_seq == seq else body
        digest = chain_hash(prev, bytes(new_body))
        run_sql(
            platform,
            "UPDATE audit_events SET body = :b, prev_hash = :p, hash = :h WHERE seq = :s",
            b=bytes(new_body),
            p=prev,
            h=digest,
            s=row_seq,
        )
        prev = digest


def forge_checkpoint(platform: Platform, seq: int) -> None:
    size = (seq + 9) // 10 * 10
    run_sql(
        platform,
        "UPDATE audit_checkpoints SET signature = :s WHERE tree_size = :t",
        s=bytes(64),
        t=size,
    )


def wrong_checkpoint_root(platform: Platform, seq: int) -> None:
    """A checkpoint signed over a wrong Merkle root (as a buggy writer would sign it)."""
    size = (seq + 9) // 10 * 10
    with platform.db.engine.connect() as conn:
        chain, created_at = conn.execute(
            text("SELECT chain_hash, created_at FROM audit_checkpoints WHERE tree_size = :t"),
            {"t": size},
        ).one()
    root = hashlib.sha256(b"forged").digest()
    message = checkpoint_message(size, root, bytes(chain), created_at)
    run_sql(
        platform,
        "UPDATE audit_checkpoints SET root_hash = :r, signature = :s WHERE tree_size = :t",
        r=root,
        s=platform.keyring.signing_key.sign(message),
        t=size,
    )


TAMPER: dict[str, Callable[[Platform, int], None]] = {
    "altered body": alter_body,
    "removed event": remove,
    "removed events": remove_range,
    "inserted event": insert,
    "altered column": alter_column,
    "recomputed chain": rechain,
    "bad checkpoint signature": forge_checkpoint,
    "checkpoint root mismatch": wrong_checkpoint_root,
}

# with chunks of 8: 8 and 9 straddle a chunk boundary, 16 ends a chunk, 13 is inside one;
# checkpoints are at 10, 20, 30, 40 (20 and 40 end a chunk of 4, 10 and 30 are inside a chunk)
POSITIONS = [1, 8, 9, 13, 16, 20, 33, 39]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("kind", sorted(TAMPER))
def test_chunked_reports_what_the_walk_reports(
    platform: Platform, kind: str, position: int, workers: int
) -> None:
    fill(platform, 40)
    TAMPER[kind](platform, position)
    expected = sequential(platform)
    assert expected.problem is not None
    for chunk_size in (4, 8):
        assert chunked(platform, chunk_size, workers) == expected, (kind, position, chunk_size)


@pytest.mark.parametrize("workers", [1, 2])
def test_intact_ledger_chunked(platform: Platform, workers: int) -> None:
    fill(platform, 37)  # a partial last chunk
    expected = sequential(platform)
    assert expected.ok
    assert (expected.events, expected.checkpoints) == (37, 3)
    for chunk_size in (1, 2, 4, 8, 64):
        assert chunked(platform, chunk_size, workers) == expected


@pytest.mark.parametrize("workers", [1, 2])
def test_tampered_head_and_tail_chunked(platform: Platform, workers: int) -> None:
    fill(platform, 40)
    run_sql(platform, "DELETE FROM audit_events WHERE seq > 35")
    assert chunked(platform, 4, workers) == sequential(platform)
    run_sql(platform, "UPDATE audit_head SET seq = 30")
    assert chunked(platform, 4, workers) == sequential(platform)


def test_chunk_size_must_be_a_power_of_two(platform: Platform) -> None:
    with pytest.raises(ValueError, match="power of two"):
        chunked(platform, 6, 1)


def _reset(platform: Platform) -> None:
    run_sql(platform, "DELETE FROM audit_events")
    run_sql(platform, "DELETE FROM audit_checkpoints")
    run_sql(
        platform,
        "UPDATE audit_head SET seq = 0, hash = :z, frontier = '[]', key_id = NULL, "
        "signature = NULL",
        z=bytes(32),
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    size=st.integers(min_value=1, max_value=45),
    kind=st.sampled_from(sorted(TAMPER)),
    where=st.floats(min_value=0, max_value=1),
    chunk_size=st.sampled_from([1, 2, 4, 8, 16]),
)
def test_property_chunked_equals_sequential(
    platform: Platform, size: int, kind: str, where: float, chunk_size: int
) -> None:
    _reset(platform)
    fill(platform, size)
    position = 2 + int(where * (size - 2)) if size > 2 else 1
    if kind in {"bad checkpoint signature", "checkpoint root mismatch"}:
        if size < 10:
            kind = "altered body"
        else:  # the checkpoint at or after position must exist
            position = min(position, size // 10 * 10)
    TAMPER[kind](platform, position)
    assert chunked(platform, chunk_size, 1) == sequential(platform)


@pytest.mark.parametrize("workers", [1, 2])
def test_events_appended_while_verifying_are_not_insertions(
    platform: Platform, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live server appends after the head was read: the chunks stop at that head."""
    from hvelv.audit import verify as module

    fill(platform, 40)
    run_chunks = module._run_chunks

    def append_first(*args: object, **kwargs: object) -> object:
        fill(platform, 7)
        return run_chunks(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "_run_chunks", append_first)
    result = chunked(platform, 8, workers)
    assert result.ok, result.problem
    assert result.events == 40
    assert sequential(platform).events == 47


def test_events_appended_while_verifying_a_tampered_ledger(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk again from a chunk that is not clean also stops at the head read first."""
    from hvelv.audit import verify as module

    fill(platform, 40)
    run_sql(platform, "DELETE FROM audit_events WHERE seq > 37")
    expected = sequential(platform)
    run_chunks = module._run_chunks

    def append_first(*args: object, **kwargs: object) -> object:
        run_sql(platform, "UPDATE audit_head SET seq = 45")
        return run_chunks(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "_run_chunks", append_first)
    assert chunked(platform, 8, 1) == expected


@pytest.mark.parametrize(
    "target",
    [
        'file:say "hi"',  # an escaped quote
        "file:back\\slash",
        "file:tab\there",  # a control character, escaped in JSON
        "file:æøå/ünïcode",  # UTF-8 as it is (no escape)
        "12345",  # digits in a text column
        "",
        None,
    ],
)
def test_column_values_the_native_walk_must_read_exactly(
    platform: Platform, target: str | None, walk: str
) -> None:
    records = [
        AuditRecord(action="test.event", actor=f"user:{target}", project_id=None, target=target)
        for _ in range(12)
    ]
    with platform.db.write() as session:
        platform.ledger.append(session, records)
    expected = sequential(platform)
    assert expected.ok, expected.problem
    for chunk_size in (4, 16):
        assert chunked(platform, chunk_size, 1) == expected
    run_sql(platform, "UPDATE audit_events SET target = :t WHERE seq = 7", t=f"{target}x")
    expected = sequential(platform)
    assert expected.problem is not None
    assert expected.problem.seq == 7
    for chunk_size in (4, 16):
        assert chunked(platform, chunk_size, 1) == expected


def test_a_column_stored_with_another_type_is_caught(platform: Platform, walk: str) -> None:
    if platform.db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's typed columns hold no value of another type")
    fill(platform, 12)
    run_sql(platform, "UPDATE audit_events SET actor = CAST(actor AS BLOB) WHERE seq = 5")
    expected = sequential(platform)
    assert expected.problem is not None
    assert expected.problem.seq == 5
    for chunk_size in (4, 16):
        assert chunked(platform, chunk_size, 1) == expected


def test_the_native_walk_does_the_work_on_sqlite(
    platform: Platform, walk: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if walk != "native":
        pytest.skip("about the native walk")
    fill(platform, 40)

    def python_walk(*args: object) -> None:
        raise AssertionError("the Python walk ran")

    monkeypatch.setattr(chunks, "_chain", python_walk)
    monkeypatch.setattr(chunks, "_column_mismatch", python_walk)
    report = chunked(platform, 8, 1)
    assert report.ok
    assert report.events == 40


@pytest.mark.parametrize("tampered", [False, True])
def test_a_file_the_native_walk_cannot_open_falls_back_to_python(
    platform: Platform, walk: str, tampered: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hvelv.audit import verify as module

    fill(platform, 20)
    if tampered:
        alter_column(platform, 11)
    expected = sequential(platform)
    monkeypatch.setattr(module, "_worker_url", lambda engine: "/nonexistent/hvelv.db")
    assert chunked(platform, 8, 1) == expected


@pytest.mark.parametrize("seq", [5.5, 8.5, 0.5, 40.5])
def test_an_event_with_a_fractional_seq_is_found(platform: Platform, walk: str, seq: float) -> None:
    """SQLite keeps a REAL in the BIGINT key: inside a chunk, between two chunks, below the
    first and above the head it is an insertion, reported as the sequential walk does."""
    if platform.db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL refuses a fractional bigint")
    fill(platform, 40)
    run_sql(
        platform,
        "INSERT INTO audit_events SELECT :seq, ts, actor, action, project_id, target, outcome, "
        "body, prev_hash, hash FROM audit_events WHERE seq = 5",
        seq=seq,
    )
    expected = sequential(platform)
    assert expected.problem is not None
    for chunk_size in (4, 8, 64):
        assert chunked(platform, chunk_size, 1) == expected, chunk_size
    assert chunked(platform, 8, 2) == expected
