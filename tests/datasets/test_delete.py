"""Deleting dataset versions and datasets through the API; the warm-up after an ingest.

A deleted version's object and data key are gone, its row stays as lineage, nothing of it stays
in the engine's memory, and queries use the newest version left; a dataset whose last version
is deleted leaves listings and queries and its name can be used again.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hvelv.datasets.models import Dataset, DatasetVersionRow
from hvelv.platform import Platform
from hvelv.projects.models import DataKey
from tests.datasets.test_api import World, make_world
from tests.support.people import Person


@pytest.fixture
def world(client: TestClient, platform: Platform, project: str, people: dict[str, Person]) -> World:
    return make_world(client, platform, project, people)


def versions(w: World) -> dict[int, DatasetVersionRow]:
    with w.platform.db.read() as s:
        rows = s.execute(select(DatasetVersionRow).order_by(DatasetVersionRow.version)).scalars()
        return {r.version: r for r in rows}


def data_key_exists(w: World, key_id: int) -> bool:
    with w.platform.db.read() as s:
        return s.execute(select(func.count()).where(DataKey.id == key_id)).scalar_one() == 1


def dataset_objects(w: World) -> set[str]:
    return {i.key for i in w.platform.store().list() if "/datasets/" in i.key}


def audit(w: World, action: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = w.client.get(
        f"/v1/projects/{w.pid}/audit",
        params={"action": action, "limit": 500, **params},
        headers=w.people["owner"].headers,
    ).json()["items"]
    return items


def delete(w: World, path: str, **params: Any) -> Any:
    return w.client.delete(f"/v1/projects/{w.pid}/datasets/{path}", params=params, headers=w.dm)


def held(w: World) -> set[str]:
    return w.platform.datasets.engine(w.pid).held()


def delete_versions_and_datasets(w: World) -> None:
    """The scenario run on every backend combination."""
    first = w.ingest("visits.csv", name="visits", participant_column="national_id")
    assert first.status_code == 201, first.text
    second = w.ingest("visits.csv", name="visits", participant_column="national_id", drop=["code"])
    assert second.status_code == 201, second.text
    assert w.query("SELECT code FROM visits").json()["error"]["code"] == "query_failed"
    assert w.rows("SELECT count(*) FROM visits") == [[10]]  # the engine now holds version 2
    v1, v2 = versions(w)[1], versions(w)[2]
    assert v2.storage_key in held(w)
    assert dataset_objects(w) == {v1.storage_key, v2.storage_key}

    # members cannot delete; a data manager deletes version 2 with a reason
    url = f"/v1/projects/{w.pid}/datasets/visits/versions/2"
    assert w.client.delete(url, headers=w.member).status_code == 403
    gone = delete(w, "visits/versions/2", reason="wrong extract")
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"dataset": "visits", "deleted_versions": [2], "current_version": 1}
    assert dataset_objects(w) == {v1.storage_key}
    assert not data_key_exists(w, v2.key_id)
    assert v2.storage_key not in held(w)
    row = versions(w)[2]
    assert row.deleted_by == "user:datamanager"
    assert row.deletion_reason == "wrong extract"
    assert row.deleted_at is not None
    assert row.source_sha256 == v2.source_sha256  # the lineage stays

    # the dataset shows the deletion; queries read version 1 again
    shown = w.client.get(f"/v1/projects/{w.pid}/datasets/visits", headers=w.member).json()
    assert shown["current_version"] == 1
    assert [(v["version"], v["deletion_reason"]) for v in shown["versions"]] == [
        (1, None),
        (2, "wrong extract"),
    ]
    one = w.query("SELECT count(*), count(code) FROM visits")
    assert one.status_code == 200, one.text
    assert one.json()["rows"] == [[10, 10]]
    assert one.json()["datasets"] == ["visits@1"]
    again = delete(w, "visits/versions/2")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "version_deleted"
    assert delete(w, "visits/versions/7").status_code == 404
    (event,) = audit(w, "dataset.delete")
    assert event["target"] == "dataset:visits@2"
    assert event["details"]["reason"] == "wrong extract"
    assert event["details"]["current_version"] == 1

    # deleting the dataset deletes version 1; the name is then unknown everywhere
    whole = delete(w, "visits")
    assert whole.status_code == 200, whole.text
    assert whole.json() == {"dataset": "visits", "deleted_versions": [1], "current_version": None}
    assert dataset_objects(w) == set()
    assert not data_key_exists(w, v1.key_id)
    assert held(w) == set()
    assert w.client.get(f"/v1/projects/{w.pid}/datasets", headers=w.member).json() == []
    missing = w.client.get(f"/v1/projects/{w.pid}/datasets/visits", headers=w.member)
    assert missing.status_code == 404
    refused = w.query("SELECT count(*) FROM visits")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "query_refused"
    assert refused.json()["error"]["details"]["reason"] == "table"
    assert delete(w, "visits").status_code == 404
    assert [e["target"] for e in audit(w, "dataset.delete")] == [
        "dataset:visits@2",
        "dataset:visits@1",
    ]
    assert len(versions(w)) == 2  # both rows kept as lineage

    # the name is free: a new dataset, numbered on, with nothing of the old one
    reused = w.ingest("visits.csv", name="visits", participant_column="national_id")
    assert reused.status_code == 201, reused.text
    assert reused.json()["version"]["version"] == 3
    listed = w.client.get(f"/v1/projects/{w.pid}/datasets", headers=w.member).json()
    assert [(d["name"], d["current_version"], d["description"]) for d in listed] == [
        ("visits", 3, "")
    ]
    assert w.rows("SELECT count(*) FROM visits") == [[10]]


def test_delete_versions_and_datasets(world: World) -> None:
    delete_versions_and_datasets(world)


def test_a_revived_name_does_not_inherit_the_no_personal_data_mark(world: World) -> None:
    world.csv(["code,label", "C0,first", "C1,second"], "codes.csv")
    assert world.ingest("codes.csv", name="codes", personal_data=False).status_code == 201
    assert world.rows("SELECT count(*) FROM codes") == [[2]]
    assert delete(world, "codes").status_code == 200
    assert world.ingest("codes.csv", name="codes").status_code == 201
    refused = world.query("SELECT count(*) FROM codes")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "dataset_not_queryable"


def test_a_version_whose_object_is_already_gone(world: World) -> None:
    """What a crash between the object's deletion and the commit leaves: the row looks live but
    the object is missing. Queries say so clearly, and deleting again completes it."""
    assert world.ingest("visits.csv", name="visits", participant_column="national_id").status_code
    (row,) = versions(world).values()
    world.platform.store().delete(row.storage_key)
    assert world.platform.datasets.settle(timeout=600)  # the warm-up decrypted it here; a
    world.platform.datasets.engine(world.pid).bases.discard([row.storage_key])  # fresh process
    changed = world.query("SELECT count(*) FROM visits")
    assert changed.status_code == 409, changed.text
    assert changed.json()["error"]["code"] == "dataset_changed"
    done = delete(world, "visits/versions/1")
    assert done.status_code == 200, done.text
    assert done.json()["current_version"] is None
    assert world.query("SELECT count(*) FROM visits").status_code == 400


def test_the_reason_is_checked(world: World) -> None:
    assert world.ingest("visits.csv", name="visits", participant_column="national_id").status_code
    bad = delete(world, "visits/versions/1", reason="line\nbreak")
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_input"
    long = delete(world, "visits", reason="x" * 1001)
    assert long.status_code == 422
    assert len(versions(world)) == 1
    assert versions(world)[1].deleted_at is None


def test_an_ingest_warms_the_engine_for_the_first_query(world: World) -> None:
    created = world.ingest("visits.csv", name="visits", participant_column="national_id")
    assert created.status_code == 201, created.text
    runtime = world.platform.datasets
    assert runtime.settle(timeout=600)
    engine = runtime.engine(world.pid)
    (row,) = versions(world).values()
    assert engine.bases.cached(row.storage_key)
    assert engine.bases.loads == 1
    assert world.rows("SELECT count(*) FROM visits") == [[10]]
    assert engine.bases.loads == 1  # the first query found the version decrypted


def test_after_an_ingest_the_next_query_of_an_active_use_does_not_build(world: World) -> None:
    """The warm-up builds the new version's working copy for the uses already reading the
    dataset (here the member's): their next query finds it built and current."""
    assert world.ingest("visits.csv", name="visits", participant_column="national_id").status_code
    before = world.rows("SELECT count(*), sum(score) FROM visits")
    runtime = world.platform.datasets
    engine = runtime.engine(world.pid)
    second = world.ingest("visits.csv", name="visits", participant_column="national_id")
    assert second.status_code == 201, second.text
    assert runtime.settle(timeout=600)
    assert engine.warm_builds == 1
    v2 = versions(world)[2]
    (db,) = engine.databases()
    copy = db.copies()[v2.storage_key]
    assert (copy.dataset, copy.version, copy.stats) == ("visits", 2, {"builds": 1, "updates": 0})
    assert versions(world)[1].storage_key not in db.copies()  # superseded, dropped
    assert world.rows("SELECT count(*), sum(score) FROM visits") == before
    assert copy.stats == {"builds": 1, "updates": 0}  # the query did not build
    # another use (the data manager's) had never read visits: it builds at its first query
    assert world.query("SELECT count(*) FROM visits", who="data_manager").status_code == 200
    assert engine.warm_builds == 1


def test_deleting_right_after_the_ingest_leaves_nothing_in_memory(world: World) -> None:
    """However the warm-up and the deletion interleave, nothing of the version stays."""
    assert world.ingest("visits.csv", name="visits", participant_column="national_id").status_code
    assert delete(world, "visits/versions/1").status_code == 200
    assert world.platform.datasets.settle(timeout=600)
    (row,) = versions(world).values()
    assert row.storage_key not in held(world)
    assert not world.platform.datasets.engine(world.pid).bases.cached(row.storage_key)


def test_page_limit_follows_the_setting(world: World) -> None:
    from hvelv.datasets.limits import QueryLimits

    world.ingest("visits.csv", name="visits", participant_column="national_id")
    world.platform.datasets.limits = QueryLimits(page_rows=4)
    sql = "SELECT score FROM visits ORDER BY score"
    first = world.query(sql)
    assert first.status_code == 200, first.text
    assert (first.json()["limit"], len(first.json()["rows"]), first.json()["next_page"]) == (
        4,
        4,
        2,
    )
    over = world.query(sql, limit=5)
    assert over.status_code == 422
    assert over.json()["error"]["details"] == {"maximum": 4}
    assert world.query(sql, format="csv").headers["x-hvelv-rows"] == "10"


def test_only_the_projects_data_managers_delete(
    client: TestClient, platform: Platform, world: World, people: dict[str, Person]
) -> None:
    assert world.ingest("visits.csv", name="visits", participant_column="national_id").status_code
    outsider = people["outsider"]  # owner of another project, not a member of this one
    url = f"/v1/projects/{world.pid}/datasets/visits"
    assert client.delete(url, headers=outsider.headers).status_code == 403
    assert client.delete(url, headers=people["owner"].headers).status_code == 403
    with platform.db.read() as s:
        assert s.execute(select(func.count()).select_from(Dataset)).scalar_one() == 1
    assert versions(world)[1].deleted_at is None
