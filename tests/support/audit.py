"""Filling the audit ledger and tampering with it through SQL, for the verifier's tests."""

from __future__ import annotations

from sqlalchemy import text

from hvelv.audit.ledger import AuditRecord
from hvelv.platform import Platform


def fill(platform: Platform, count: int) -> None:
    """``count`` events with varied actors, projects and JSON escapes, in one transaction."""
    records = [
        AuditRecord(
            action="test.event",
            actor=f"user:u{i % 7}",
            project_id=f"p{i % 3}" if i % 2 else None,
            target=f"thing:{i}",
            details={"i": i, "note": 'æøå "quoted" \\ \n'},
        )
        for i in range(count)
    ]
    with platform.db.write() as session:
        platform.ledger.append(session, records)


def run_sql(platform: Platform, sql: str, **params: object) -> None:
    with platform.db.engine.begin() as conn:
        conn.execute(text(sql), params)
