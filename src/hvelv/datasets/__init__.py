"""Project datasets: pseudonymised ingest, encrypted Parquet at rest, consent-enforced SQL.

* :mod:`~hvelv.datasets.ingest` — CSV / Parquet / JSON Lines into an encrypted dataset version;
* :mod:`~hvelv.datasets.storage` — Parquet inside the platform's AES-GCM segment stream;
* :mod:`~hvelv.datasets.keys` — dense participant keys and permit masks;
* :mod:`~hvelv.datasets.sql_vet` — vetting and rewriting researcher SQL (sqlglot);
* :mod:`~hvelv.datasets.enforce` — per-use DuckDB databases with consent-filtered working copies;
* :mod:`~hvelv.datasets.engine` — the query engine with row, byte and time limits;
* :mod:`~hvelv.datasets.synthetic` — synthetic cohorts for tests, benchmarks and demos.

See docs/datasets.md.
"""
