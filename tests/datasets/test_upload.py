"""Creating a dataset version by streaming the file in the request body
(``POST .../datasets/{name}/upload``): ingested from an encrypted temporary object that is
deleted after success and after failure; limits, options and roles."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hvelv.config import Settings, load_settings
from hvelv.datasets.models import Dataset, DatasetVersionRow
from hvelv.platform import Platform
from tests.datasets.test_api import ROWS_EACH, World, make_world
from tests.support.people import Person

SEGMENT = 65536
MAX_FILE = 3_000_000


@pytest.fixture
def settings(tmp_path: Path, database_for: Any) -> Settings:
    home = tmp_path / "home"
    return load_settings(
        home=home,
        database_url=database_for(home),
        audit_checkpoint_interval=10,
        segment_size=SEGMENT,
        upload_part_bytes=SEGMENT,
        max_file_bytes=MAX_FILE,
    )


@pytest.fixture
def world(client: TestClient, platform: Platform, project: str, people: dict[str, Person]) -> World:
    return make_world(client, platform, project, people)


def post(w: World, name: str, body: Any, who: str = "data_manager", **params: Any) -> Any:
    return w.client.post(
        f"/v1/projects/{w.pid}/datasets/{name}/upload",
        params=params,
        content=body,
        headers={**w.people[who].headers, "Content-Type": "application/octet-stream"},
    )


def chunks(data: bytes, size: int = 10_000) -> Iterator[bytes]:
    """A body sent in pieces, without Content-Length (chunked)."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def leftovers(w: World) -> list[str]:
    store = w.platform.store()
    objects = [o.key for o in store.list() if "/datasets/uploads/" in o.key]
    return objects + [u.key for u in store.list_uploads()]


def dataset_objects(w: World) -> list[str]:
    return [o.key for o in w.platform.store().list() if "/datasets/" in o.key]


def visits_csv(w: World) -> bytes:
    """A Norwegian registry extract: ;-separated, Windows-1252, postcodes with leading zeros."""
    lines = ["fnr;navn;postnr;poeng"]
    for who, count in ROWS_EACH.items():
        lines.extend(f"{w.nids[who]};Åse Ørn {who};0{150 + i};{i}" for i in range(count))
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")


def test_a_streamed_csv_becomes_a_version(world: World) -> None:
    data = visits_csv(world)
    created = post(
        world,
        "visits",
        chunks(data),
        filename="registry/visits.csv",
        participant_column="fnr",
        types=["postnr=string"],
        generalise=["postnr=postcode2"],
        description="From the registry",
        column_descriptions=["poeng=Points = score"],
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["rows_loaded"] == sum(ROWS_EACH.values())
    assert body["read"] == {
        "format": "csv",
        "encoding": "cp1252",
        "delimiter": ";",
        "header": True,
        "detected": ["encoding", "delimiter", "header"],
    }
    lineage = body["version"]["lineage"]
    assert lineage["source_area"] == "upload"
    assert lineage["source_file_id"] is None
    assert lineage["source_path"] == "registry/visits.csv"
    assert lineage["source_sha256"] == hashlib.sha256(data).hexdigest()
    assert "type:postnr:string" in lineage["rules"]
    assert "encoding:cp1252" in lineage["rules"]
    assert leftovers(world) == []
    assert len(dataset_objects(world)) == 1  # the version, not the upload
    assert world.rows("SELECT count(*) FROM visits") == [[3 + 2 + 5]]
    assert world.rows("SELECT DISTINCT postnr, navn FROM visits ORDER BY 1, 2 LIMIT 1") == [
        ["01", "Åse Ørn A"]
    ]
    shown = world.client.get(
        f"/v1/projects/{world.pid}/datasets/visits", headers=world.member
    ).json()
    assert shown["description"] == "From the registry"
    assert shown["column_descriptions"] == {"poeng": "Points = score"}
    audit = world.client.get(
        f"/v1/projects/{world.pid}/audit",
        params={"action": "dataset.ingest"},
        headers=world.people["owner"].headers,
    ).json()["items"]
    assert audit[-1]["details"]["source_sha256"] == lineage["source_sha256"]


def test_a_streamed_parquet_file_is_read_by_seeking(world: World) -> None:
    nids = [world.nids[who] for who, count in ROWS_EACH.items() for _ in range(count)] * 2000
    table = pa.table(
        {
            "national_id": nids,
            "value": pa.array(range(len(nids)), pa.int64()),
            "noise": [f"{i * 7919 % 100_003:x}-{i}" for i in range(len(nids))],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=5000, compression="none")
    data = buf.getvalue()
    assert 8 * SEGMENT < len(data) < MAX_FILE
    created = post(
        world, "tbl", data, filename="t.parquet", participant_column="national_id", types=[]
    )
    assert created.status_code == 201, created.text
    assert created.json()["read"] == {
        "format": "parquet",
        "encoding": None,
        "delimiter": None,
        "header": None,
        "detected": [],
    }
    permitted = pc.is_in(table["national_id"], pa.array([world.nids[x] for x in "ABD"]))
    expected = pc.sum(table.filter(permitted)["value"]).as_py()
    assert world.rows("SELECT sum(value) FROM tbl") == [[expected]]
    assert leftovers(world) == []


def test_the_format_comes_from_the_option_the_name_or_the_content_type(world: World) -> None:
    jsonl = b"".join(
        f'{{"nid": "{world.nids[w]}", "x": {n}}}\n'.encode() for n, w in enumerate("ABCD")
    )
    by_type = world.client.post(
        f"/v1/projects/{world.pid}/datasets/j/upload",
        params={"participant_column": "nid"},
        content=jsonl,
        headers={**world.dm, "Content-Type": "application/x-ndjson"},
    )
    assert by_type.status_code == 201, by_type.text
    assert by_type.json()["read"]["format"] == "jsonl"
    unknown = post(world, "j", jsonl, participant_column="nid")
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "ingest_invalid"
    given = post(world, "j", jsonl, participant_column="nid", format="jsonl")
    assert given.status_code == 201, given.text
    assert given.json()["version"]["version"] == 2
    assert given.json()["version"]["lineage"]["source_path"] is None


def test_failed_ingests_leave_nothing(world: World) -> None:
    data = visits_csv(world) + b"12345678901;X;0150;1\r\n"
    rejected = post(world, "visits", chunks(data), filename="v.csv", participant_column="fnr")
    assert rejected.status_code == 422, rejected.text
    assert rejected.json()["error"]["details"]["rejections"] == [
        {"row": sum(ROWS_EACH.values()) + 1, "reason": "checksum"}
    ]
    wrong_type = post(
        world, "visits", visits_csv(world), filename="v.csv", participant_column="fnr",
        types=["navn=int64"],
    )  # fmt: skip
    assert wrong_type.status_code == 422
    assert wrong_type.json()["error"]["details"] == {"column": "navn", "row": 1, "type": "int64"}
    wrong_encoding = post(
        world, "visits", visits_csv(world), filename="v.csv", participant_column="fnr",
        encoding="utf8",
    )  # fmt: skip
    assert wrong_encoding.status_code == 422
    assert "not valid utf8" in wrong_encoding.json()["error"]["message"]
    assert leftovers(world) == []
    assert dataset_objects(world) == []
    with world.platform.db.read() as s:
        assert s.execute(select(func.count()).select_from(Dataset)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(DatasetVersionRow)).scalar_one() == 0


def test_options_are_checked_before_the_body_is_read(world: World) -> None:
    def never() -> Iterator[bytes]:
        raise AssertionError("the body was read")
        yield b""

    cases: list[tuple[dict[str, Any], str]] = [
        ({"types": ["postnr=varchar"]}, "ingest_invalid"),
        ({"types": ["postnr"]}, "invalid_input"),
        ({"generalise": ["postnr=zip"]}, "ingest_invalid"),
        ({"encoding": "klingon"}, "ingest_invalid"),
        ({"source": "import"}, "invalid_input"),  # unknown option
        ({"header": "maybe"}, "invalid_input"),
        ({"data_class": "secret"}, "invalid_input"),
    ]
    for params, code in cases:
        refused = post(world, "visits", never(), filename="v.csv", **params)
        assert refused.status_code == 422, (params, refused.text)
        assert refused.json()["error"]["code"] == code, params
    bad_name = post(world, "Visits", b"a\n1\n", filename="v.csv")
    assert bad_name.status_code == 422
    assert leftovers(world) == []


def test_size_limits(world: World, platform: Platform) -> None:
    big = b"a,b\n" + b"1,2\n" * (MAX_FILE // 4)
    assert len(big) > MAX_FILE
    declared = post(world, "big", big, filename="b.csv")  # Content-Length: refused up front
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "file_too_large"
    streamed = post(world, "big", chunks(big, 100_000), filename="b.csv")
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "file_too_large"
    assert leftovers(world) == []

    set_quota = world.client.patch(
        f"/v1/projects/{world.pid}/admin",
        json={"quota_bytes": 1500},
        headers=world.people["operator"].headers,
    )
    assert set_quota.status_code == 200, set_quota.text
    small = b"a,b\n" + b"1,2\n" * 300  # the visits.csv upload already uses some of the quota
    over = post(world, "small", chunks(small, 100), filename="s.csv", personal_data=False)
    assert over.status_code == 413
    assert over.json()["error"]["code"] == "quota_exceeded"
    fits = post(world, "small", b"a,b\n1,2\n", filename="s.csv", personal_data=False)
    assert fits.status_code == 201, fits.text
    assert leftovers(world) == []


def test_only_data_managers_upload(world: World) -> None:
    for who in ("member", "owner", "auditor", "operator"):
        response = post(world, "visits", visits_csv(world), who=who, filename="v.csv")
        assert response.status_code == 403, who
    assert leftovers(world) == []


def test_the_json_route_takes_the_same_reading_options(world: World) -> None:
    """``POST .../datasets`` from a stored file: types, encoding and header in the body."""
    from tests.files.support import upload

    upload(world.client, world.pid, world.dm, visits_csv(world), "registry.csv", "import")
    body = {"name": "reg", "source": {"area": "import", "path": "registry.csv"}}
    created = world.ingest(
        "registry.csv",
        name="reg",
        participant_column="fnr",
        types={"postnr": "string"},
        encoding="cp1252",
        header=True,
    )
    assert created.status_code == 201, created.text
    assert created.json()["read"]["detected"] == ["delimiter"]
    assert world.rows("SELECT min(postnr) FROM reg") == [["0150"]]
    wrong = world.ingest(
        "registry.csv", name="reg", participant_column="fnr", types={"navn": "date"}
    )
    assert wrong.status_code == 422
    assert wrong.json()["error"]["details"] == {"column": "navn", "row": 1, "type": "date"}
    unknown = world.client.post(
        f"/v1/projects/{world.pid}/datasets",
        json={**body, "types": {"nope": "string"}},
        headers=world.dm,
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"] == {"columns": ["nope"]}
    assert leftovers(world) == []
