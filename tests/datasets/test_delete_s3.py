"""Deleting dataset versions with their objects on S3 (a real SeaweedFS), and what a failed
object deletion leaves: nothing changed, and a retry completes it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hvelv.config import Settings
from hvelv.platform import Platform
from hvelv.storage.factory import build_store
from tests.datasets.test_api import World, make_world
from tests.datasets.test_api_s3 import settings as s3_settings
from tests.datasets.test_delete import (
    audit,
    data_key_exists,
    dataset_objects,
    delete,
    delete_versions_and_datasets,
    versions,
)
from tests.support.people import Person

settings = s3_settings  # the project's datasets live on S3


@pytest.fixture
def world(client: TestClient, platform: Platform, project: str, people: dict[str, Person]) -> World:
    assert platform.store_name == "s3"
    return make_world(client, platform, project, people)


def test_delete_versions_and_datasets_on_s3(world: World) -> None:
    delete_versions_and_datasets(world)


def test_a_failed_object_deletion_changes_nothing_and_a_retry_completes_it(
    world: World, settings: Settings
) -> None:
    assert world.ingest("visits.csv", name="visits", participant_column="national_id").status_code
    (row,) = versions(world).values()
    good = world.platform.store("s3")
    # the same bucket with a wrong secret: every request is refused by the server
    wrong = dataclasses.replace(
        settings.storage("s3"), s3_secret_key="not-the-secret", s3_create_bucket=False
    )
    stores: dict[str, Any] = world.platform._stores
    stores["s3"] = build_store(wrong)
    try:
        failed = delete(world, "visits/versions/1", reason="mistake")
    finally:
        stores["s3"] = good
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["code"] == "storage_unavailable"
    assert versions(world)[1].deleted_at is None
    assert data_key_exists(world, row.key_id)
    assert dataset_objects(world) == {row.storage_key}
    (event,) = audit(world, "dataset.delete")
    assert event["outcome"] == "failed"
    assert world.rows("SELECT count(*) FROM visits") == [[10]]  # still works

    whole = delete(world, "visits", reason="mistake")
    assert whole.status_code == 200, whole.text
    assert dataset_objects(world) == set()
    assert not data_key_exists(world, row.key_id)
    assert [e["outcome"] for e in audit(world, "dataset.delete")] == ["failed", "success"]
