"""The native chunk walk's column check on bodies it must not vouch for (it then leaves the
verdict to the exact SQL check), on a small SQLite file of its own."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from hvelv.audit import chunks

pytestmark = pytest.mark.skipif(chunks.native is None, reason="hvelv.audit._walk was not built")

COLUMNS = {
    "seq": 1,
    "ts": "2026-12-05T00:00:00Z",
    "actor": "user:a",
    "action": "x.y",
    "outcome": "success",
    "project": None,
    "target": "t",
}


def ledger(tmp_path: Path, body: bytes) -> str:
    """One event whose columns are COLUMNS, with ``body``, correctly chained."""
    path = str(tmp_path / "walk.db")
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE audit_events (seq BIGINT NOT NULL PRIMARY KEY, ts VARCHAR(32), "
        "actor VARCHAR(200), action VARCHAR(64), project_id VARCHAR(16), target VARCHAR(400), "
        "outcome VARCHAR(16), body BLOB, prev_hash BLOB, hash BLOB)"
    )
    prev = bytes(32)
    conn.execute(
        "INSERT INTO audit_events VALUES (1, :ts, :actor, :action, :project, :target, "
        ":outcome, :body, :prev, :hash)",
        {**COLUMNS, "body": body, "prev": prev, "hash": hashlib.sha256(prev + body).digest()},
    )
    conn.commit()
    conn.close()
    return path


GOOD = (
    b'{"action":"x.y","actor":"user:a","details":{"n":[1,-2.5e3,0.25,true,null],'
    b'"s":"a\\"b\\\\c\\u00e6\\n"},"outcome":"success","project":null,"seq":1,"target":"t",'
    b'"ts":"2026-12-05T00:00:00Z"}'
)


def columns_ok(path: str) -> bool:
    walked = chunks.native.walk(path, 1, 1, False, False, [])
    assert walked is not None  # the chain itself is right
    return bool(walked[-1])


def test_a_well_formed_body_is_vouched_for(tmp_path: Path) -> None:
    assert columns_ok(ledger(tmp_path, GOOD))


@pytest.mark.parametrize(
    "bad",
    [
        b'"n":1.2.3',
        b'"n":+1',
        b'"n":01',
        b'"n":1.',
        b'"n":-',
        b'"n":1e',
        b'"n":tru',
        b'"s":"\x01"',  # a raw control character
        b'"s":"\\q"',  # an unknown escape
        b'"s":"\\u12"',  # a short \\u escape
        b'"s":"open',
        b'"n":[1,]',
        b'"n":{"a":1,}',
        b'"n":{"a"}',
    ],
)
def test_a_malformed_value_anywhere_is_left_to_the_exact_check(tmp_path: Path, bad: bytes) -> None:
    body = GOOD.replace(b'"details":{"n":[1,-2.5e3,0.25,true,null],', b'"details":{' + bad + b",")
    assert body != GOOD
    assert not columns_ok(ledger(tmp_path, body))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"seq":1', b'"seq":1.0'),  # equal in value, not proven by the scanner
        (b'"seq":1', b'"seq":1,"seq":1'),  # a duplicate key
        (b'"actor":"user:a"', b'"act\\u006fr":"user:a"'),  # an escaped key
        (b'"target":"t"', b'"target":"\\u0074"'),  # an escaped value
        (b'"target":"t"', b'"target":"T"'),  # a real disagreement
    ],
)
def test_what_the_scanner_cannot_prove_is_not_vouched_for(
    tmp_path: Path, old: bytes, new: bytes
) -> None:
    assert not columns_ok(ledger(tmp_path, GOOD.replace(old, new)))
