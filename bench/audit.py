"""Benchmark the audit ledger: append throughput and offline verification speed.

Baseline, measured in the same run on the same bytes: raw SHA-256 over the chain
(``h_i = SHA-256(h_{i-1} || body_i)`` for every stored event body, from memory) — the
least work any verifier of this chain must do. Verification reads the events from the
database and also checks links, Merkle checkpoints, signatures and the signed head.

Usage: python bench/audit.py [--events 1000000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from hvelv.audit.ledger import GENESIS, AuditRecord
from hvelv.audit.verify import verify
from hvelv.config import load_settings
from hvelv.crypto.keyring import create_keyring
from hvelv.db import migrate
from hvelv.db.engine import Database
from hvelv.platform import Platform


def records(start: int, count: int) -> list[AuditRecord]:
    return [
        AuditRecord(
            action="file.download",
            actor=f"user:researcher{(start + i) % 50}",
            project_id=f"p{1001 + (start + i) % 20}",
            target=f"file:files/cohort/part-{start + i:07d}.parquet",
            request_id=f"{start + i:032x}",
            client="10.0.0.17",
            details={"sha256": f"{start + i:064x}", "bytes": 1048576},
        )
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hvelv-bench-") as tmp:
        home = Path(tmp)
        settings = load_settings(home=home, audit_checkpoint_interval=1000)
        keyring = create_keyring(home)
        db = Database(settings.resolved_database_url)
        migrate.upgrade(db.engine)
        platform = Platform.build(settings, db, keyring)

        # append in batches, one transaction per batch (as a bulk import would)
        batches = [records(i, args.batch) for i in range(0, args.events, args.batch)]
        started = time.perf_counter()
        for batch in batches:
            with db.write() as session:
                platform.ledger.append(session, batch)
        append_s = time.perf_counter() - started
        append_rate = args.events / append_s

        # single events, one transaction each (as API requests do), on a sample
        single = 2000
        started = time.perf_counter()
        for record in records(args.events, single):
            with db.write() as session:
                platform.ledger.record(session, record)
        single_rate = single / (time.perf_counter() - started)

        with db.engine.connect() as conn:
            bodies = [
                bytes(b)
                for (b,) in conn.execute(text("SELECT body FROM audit_events ORDER BY seq"))
            ]
        total_bytes = sum(len(b) for b in bodies)

        # baseline: the raw chain over the same bytes, from memory
        started = time.perf_counter()
        prev = GENESIS
        for body in bodies:
            prev = hashlib.sha256(prev + body).digest()
        raw_s = time.perf_counter() - started

        blob = b"".join(bodies)
        started = time.perf_counter()
        hashlib.sha256(blob).digest()
        bulk_s = time.perf_counter() - started
        del blob, bodies

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = time.process_time()
        started = time.perf_counter()
        report = verify(db.engine, keyring.signing_public)
        verify_s = time.perf_counter() - started
        cpu = time.process_time() - cpu
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        workers_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        assert report.ok, report.problem
        db.dispose()

    n = report.events
    print(f"events:                       {n:,} ({total_bytes / 1e6:.0f} MB of canonical JSON)")
    print(f"append, batches of {args.batch}:      {append_rate:,.0f} events/s ({append_s:.1f} s)")
    print(f"append, one per transaction:  {single_rate:,.0f} events/s (fsync per commit)")
    print(
        f"raw SHA-256 chain (memory):   {n / raw_s:,.0f} events/s, "
        f"{total_bytes / raw_s / 1e6:,.0f} MB/s"
    )
    print(f"raw SHA-256 one buffer:       {total_bytes / bulk_s / 1e6:,.0f} MB/s")
    print(
        f"verify (db + chain + Merkle): {n / verify_s:,.0f} events/s, "
        f"{total_bytes / verify_s / 1e6:,.0f} MB/s"
        f" ({verify_s:.2f} s, {report.checkpoints} checkpoints)"
    )
    print(
        f"verify CPU time:              {cpu + workers_cpu:.2f} s "
        f"({cpu:.2f} s this process, {workers_cpu:.2f} s worker processes)"
    )
    print(f"goal audit_verify_vs_sha256 = {raw_s / verify_s:.2f} (target >= 0.5)")
    print(f"goal audit_append_per_s = {append_rate:.0f} (target >= 20000)")


if __name__ == "__main__":
    main()
