"""Ingest -> query with the dataset stored in a real S3 store (SeaweedFS)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hvelv.datasets.engine import QueryEngine
from hvelv.datasets.keys import ParticipantKeys, Permits
from hvelv.storage.base import BlobStore
from tests.datasets.conftest import Ingest, pseudonym_of
from tests.storage.conftest import make_s3_store
from tests.support.seaweedfs import SeaweedFS


@pytest.fixture
def s3_store(seaweedfs_s3: SeaweedFS) -> BlobStore:
    return make_s3_store(seaweedfs_s3, f"t-{uuid.uuid4().hex}/")


@pytest.mark.backend
def test_ingest_and_query_on_s3(
    s3_store: BlobStore, run_ingest: Ingest, visits: pa.Table, tmp_path: Path, engine: QueryEngine
) -> None:
    pq.write_table(visits, tmp_path / "v.parquet")
    keys = ParticipantKeys()
    report = run_ingest(tmp_path / "v.parquet", keys=keys, target=s3_store)
    assert report.version is not None
    raw = s3_store.read_bytes(report.version.location.key)
    assert keys.pseudonyms()[0].encode() not in raw
    withdrawn = keys.pseudonyms()[0]
    permits = Permits.from_pseudonyms(keys, set(keys.pseudonyms()) - {withdrawn}, 5)
    result = engine.query(
        "SELECT count(*) AS n, count(DISTINCT participant) AS p FROM visits",
        datasets={"visits": report.version},
        use="s3-use",
        permits=permits,
    )
    plain = visits.column("national_id").to_pylist()
    assert pseudonym_of(plain[0]) == withdrawn  # keys follow first appearance
    hidden_rows = plain.count(plain[0])
    assert result.table.to_pylist() == [{"n": len(plain) - hidden_rows, "p": len(keys) - 1}]
