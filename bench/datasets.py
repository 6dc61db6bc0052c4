"""Benchmark: dataset ingest with pseudonymisation, and consent-enforced queries vs raw DuckDB.

One run, one machine, baselines measured alongside:

* a synthetic cohort (``--participants``, default rows / 10) and ``--rows`` visit rows (default
  10,000,000) written to a plain source file (Parquet by default, ``--source csv`` for CSV);
* **ingest**: :func:`hvelv.datasets.ingest.ingest` of that file — national id validation,
  keyed-HMAC pseudonymisation, dense keys, a dropped and two generalised columns, Parquet
  (zstd) encrypted into the local blob store — rows/s over the whole call;
* **query**: one GROUP BY aggregate through :class:`hvelv.datasets.engine.QueryEngine` (SQL
  vetting and rewrite, permit sync, the use's filtered working copy; ~80 % of participants
  permitted) vs the same aggregate in DuckDB directly on the unencrypted Parquet file with no
  consent filter (``raw``). Medians of ``--repeat`` runs after one warm-up; both with the same
  thread count.

Alternatives to the working copy are timed on the same data: the naive ``IN (SELECT
pseudonym)`` semi-join, a semi-join on dense integer keys, and the unfiltered data as a native
DuckDB table. Also printed: the first query (decrypt + build the working copy), a query right
after one participant withdraws (incremental update) and after 10 % change (rebuild).

Ends with two goal lines (issue 6):

    goal enforced_vs_raw = V (target <= 1.3)
    goal ingest_rows_per_s = V (target >= 200000)

Usage: python bench/datasets.py [--rows N] [--participants P] [--repeat R] [--source parquet|csv]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from hvelv.datasets.engine import EngineSettings, QueryEngine, QueryLimits
from hvelv.datasets.ingest import IngestOptions, ingest
from hvelv.datasets.keys import PK_COLUMN, ParticipantKeys, Permits
from hvelv.datasets.storage import BlobLocation, read_table
from hvelv.datasets.synthetic import make_cohort, visits_schema
from hvelv.storage.local import LocalBlobStore

QUERY = (
    "SELECT icd10, lab_test, count(*) AS n, avg(lab_value) AS mean, max(visit_date) AS last "
    "FROM visits GROUP BY icd10, lab_test ORDER BY icd10, lab_test"
)
THREADS = 2


def paired(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each function, run interleaved (the machine is shared and noisy)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def write_source(path: Path, rows: int, participants: int, fmt: str, seed: int) -> None:
    cohort = make_cohort(participants, seed=seed)
    batches = cohort.visits(rows, batch_rows=1 << 20)
    if fmt == "parquet":
        with pq.ParquetWriter(path, visits_schema(), compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
    else:
        with pacsv.CSVWriter(path, visits_schema()) as writer:
            for batch in batches:
                writer.write_batch(batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--participants", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--source", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rows = args.rows
    participants = args.participants or max(rows // 10, 1)
    print(f"scale: {rows:,} rows x {participants:,} participants, source {args.source}, "
          f"{THREADS} threads, DuckDB {duckdb.__version__}, pyarrow {pa.__version__}")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="hvelv-bench-datasets-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / f"visits.{args.source}"
        t = time.perf_counter()
        write_source(source, rows, participants, args.source, args.seed)
        print(f"synthetic source:          {time.perf_counter() - t:6.1f} s, "
              f"{source.stat().st_size / 1e6:,.0f} MB")  # fmt: skip

        # -- ingest ------------------------------------------------------------------------------
        pseudonym_key = os.urandom(32)

        def pseudonymise(national_id: str) -> str:
            digest = hmac.new(pseudonym_key, national_id.encode(), hashlib.sha256).hexdigest()
            return "pn-" + digest[:20]

        store = LocalBlobStore(tmp / "blobs")
        keys = ParticipantKeys()
        t = time.perf_counter()
        cpu = time.process_time()
        report = ingest(
            source,
            name="visits",
            version=1,
            location=BlobLocation(store, "bench/datasets/visits/1", os.urandom(32)),
            options=IngestOptions(
                participant_column="national_id",
                allow_synthetic=True,
                drop=frozenset({"name"}),
                generalise={"birth_date": "year", "postcode": "postcode2"},
            ),
            pseudonymise=pseudonymise,
            keys=keys,
            created_by="bench",
            now=dt.datetime.now(dt.UTC),
        )
        ingest_s = time.perf_counter() - t
        ingest_cpu = time.process_time() - cpu
        version = report.version
        assert version is not None
        assert report.rows_loaded == rows
        ingest_rate = rows / ingest_s
        print(f"ingest:                    {ingest_s:6.1f} s, {ingest_rate:,.0f} rows/s, "
              f"{len(keys):,} pseudonyms, stored {version.stored.stored_bytes / 1e6:,.0f} MB "
              f"encrypted; {ingest_cpu:.1f} s CPU (all threads)")  # fmt: skip

        # -- the raw baseline: DuckDB on the unencrypted Parquet, no consent filter --------------
        plain = read_table(version.location)
        raw_path = tmp / "plain.parquet"
        pq.write_table(plain, raw_path, compression="zstd", row_group_size=1 << 20)
        raw_con = duckdb.connect(config={"threads": THREADS})
        raw_sql = QUERY.replace("FROM visits", f"FROM read_parquet('{raw_path}')")

        def raw() -> pa.Table:
            return raw_con.sql(raw_sql).to_arrow_table()

        # -- enforced: the engine ------------------------------------------------------------------
        rng = np.random.default_rng(args.seed)
        mask = rng.random(len(keys)) < 0.8
        permits = Permits.from_mask(mask, ledger_position=1)
        engine = QueryEngine(EngineSettings(memory_limit="6GB", threads=THREADS))
        datasets = {"visits": version}
        limits = QueryLimits(timeout_s=600)

        def enforced(p: Permits = permits) -> pa.Table:
            return engine.query(QUERY, datasets=datasets, use="bench-use", permits=p,
                                limits=limits).table  # fmt: skip

        t = time.perf_counter()
        first = enforced()
        first_s = time.perf_counter() - t
        expected_n = int(mask[plain.column(PK_COLUMN).to_numpy()].sum())
        assert sum(first.column("n").to_pylist()) == expected_n
        assert sum(raw().column("n").to_pylist()) == rows

        # -- alternatives on the same data ---------------------------------------------------------
        alt = duckdb.connect(config={"threads": THREADS, "memory_limit": "6GB"})
        alt.register("plain_arrow", plain)
        alt.execute("CREATE TABLE base AS SELECT * FROM plain_arrow")
        alt.unregister("plain_arrow")
        sel = pa.array(mask[plain.column(PK_COLUMN).to_numpy()])
        alt.register("copy_arrow", plain.filter(sel))
        alt.execute("CREATE TABLE copy_varchar AS SELECT * FROM copy_arrow")
        alt.unregister("copy_arrow")
        names = np.asarray(keys.pseudonyms(), dtype=object)
        alt.register("permitted_arrow", pa.table({
            "pseudonym": pa.array(names[mask].tolist(), pa.string()),
            "k": pa.array(np.flatnonzero(mask).astype(np.int32)),
        }))  # fmt: skip
        alt.execute("CREATE TABLE permitted AS SELECT * FROM permitted_arrow")
        alt.unregister("permitted_arrow")
        del plain, sel
        variants = {
            "native": "FROM base",
            "naive": "FROM (SELECT * FROM base "
            "WHERE participant IN (SELECT pseudonym FROM permitted))",
            "dense": f"FROM (SELECT * FROM base WHERE {PK_COLUMN} IN (SELECT k FROM permitted))",
            "varchar_copy": "FROM copy_varchar",
        }

        def alternative(frm: str) -> Callable[[], object]:
            sql = QUERY.replace("FROM visits", frm)
            return lambda: alt.sql(sql).to_arrow_table()

        medians = paired(
            {"raw": raw, "enforced": enforced}
            | {name: alternative(frm) for name, frm in variants.items()},
            args.repeat,
        )

        # one withdrawal, then a query (incremental update + query)
        withdrawals: list[float] = []
        current = mask.copy()
        permitted_keys = np.flatnonzero(current)
        for i in range(args.repeat):
            current[permitted_keys[i]] = False
            p = Permits.from_mask(current, ledger_position=2 + i)
            t = time.perf_counter()
            enforced(p)
            withdrawals.append(time.perf_counter() - t)
        withdrawal_s = statistics.median(withdrawals)
        changed = current.copy()
        flip = rng.random(len(changed)) < 0.1
        changed[flip] = ~changed[flip]
        t = time.perf_counter()
        enforced(Permits.from_mask(changed, ledger_position=100))
        rebuild_s = time.perf_counter() - t
        alt.close()
        engine.close()
        raw_con.close()

    ms = 1000.0
    raw_s, enforced_s = medians["raw"], medians["enforced"]
    print(f"medians of {args.repeat} interleaved runs:")
    print(f"raw DuckDB on plain Parquet, no filter:      {raw_s * ms:8.1f} ms")
    print(f"enforced (engine, working copy), median:     {enforced_s * ms:8.1f} ms")
    print(f"  first query (decrypt + build copy):        {first_s * ms:8.1f} ms")
    print(f"  after one withdrawal (incremental):        {withdrawal_s * ms:8.1f} ms")
    print(f"  after 10 % of participants changed (rebuild): {rebuild_s * ms:5.1f} ms")
    print("alternatives, same data in a native DuckDB table (text as VARCHAR):")
    for name, label in [
        ("native", "no filter"),
        ("naive", "IN (SELECT pseudonym) semi-join"),
        ("dense", "IN (SELECT dense key) semi-join"),
        ("varchar_copy", "filtered working copy, no ENUMs"),
    ]:
        v = medians[name]
        print(f"  {label + ':':42s} {v * ms:8.1f} ms ({v / raw_s:.2f} x raw)")
    print(f"goal enforced_vs_raw = {enforced_s / raw_s:.2f} (target <= 1.3)")
    print(f"goal ingest_rows_per_s = {ingest_rate:.0f} (target >= 200000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
