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
