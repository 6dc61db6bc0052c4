"""The API scenario with dataset versions (and the uploaded file) on S3 (a real SeaweedFS)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hvelv.config import Settings, load_settings
from hvelv.platform import Platform
from tests.datasets.test_api import ingest_and_query, make_world
from tests.datasets.test_upload import chunks, dataset_objects, leftovers, post, visits_csv
from tests.support.people import Person
from tests.support.seaweedfs import SeaweedFS


@pytest.fixture
def settings(tmp_path: Path, database_for: Any, seaweedfs_s3: SeaweedFS) -> Settings:
    home = tmp_path / "home"
    return load_settings(
        home=home,
        database_url=database_for(home),
        audit_checkpoint_interval=10,
        storage_backend="s3",
        s3_endpoint_url=seaweedfs_s3.endpoint_url,
        s3_region=seaweedfs_s3.region,
        s3_access_key=seaweedfs_s3.access_key,
        s3_secret_key=seaweedfs_s3.secret_key,
        s3_bucket=f"hvelv-datasets-{uuid.uuid4().hex[:8]}",
        s3_create_bucket=True,
    )


def test_ingest_query_withdraw_and_log_on_s3(
    client: TestClient, platform: Platform, project: str, people: dict[str, Person]
) -> None:
    assert platform.store_name == "s3"
    ingest_and_query(make_world(client, platform, project, people))


def test_streamed_upload_on_s3_leaves_no_temporary_object(
    client: TestClient, platform: Platform, project: str, people: dict[str, Person]
) -> None:
    w = make_world(client, platform, project, people)
    data = visits_csv(w)
    created = post(w, "visits", chunks(data), filename="visits.csv", participant_column="fnr")
    assert created.status_code == 201, created.text
    assert created.json()["version"]["lineage"]["source_area"] == "upload"
    assert w.rows("SELECT count(*) FROM visits") == [[3 + 2 + 5]]
    rejected = post(
        w, "other", data + b"123;x;0150;1\r\n", filename="o.csv", participant_column="fnr"
    )
    assert rejected.status_code == 422
    assert leftovers(w) == []
    assert len(dataset_objects(w)) == 1
