"""Ingest reads stored files through a seekable decrypting stream: multi-segment Parquet (the
footer is read by seeking), JSON Lines and CSV from the files area give the same dataset."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from hvelv.config import Settings, load_settings
from hvelv.datasets.ingest import write_jsonl
from hvelv.datasets.service import FileStream
from hvelv.files import catalog
from hvelv.files.blobs import FileReader, blobs_of
from hvelv.files.paths import Area
from hvelv.platform import Platform
from tests.datasets.test_api import ROWS_EACH, World, make_world
from tests.files.support import upload
from tests.support.people import Person

SEGMENT = 65536


@pytest.fixture
def settings(tmp_path: Path, database_for: Any) -> Settings:
    home = tmp_path / "home"
    return load_settings(
        home=home,
        database_url=database_for(home),
        audit_checkpoint_interval=10,
        segment_size=SEGMENT,
        upload_part_bytes=SEGMENT,
    )


@pytest.fixture
def world(client: TestClient, platform: Platform, project: str, people: dict[str, Person]) -> World:
    return make_world(client, platform, project, people)


def _table(w: World, repeat: int) -> pa.Table:
    nids = [w.nids[who] for who, count in ROWS_EACH.items() for _ in range(count)] * repeat
    n = len(nids)
    return pa.table(
        {
            "national_id": nids,
            "value": pa.array(range(n), pa.int64()),
            "noise": pa.array([f"{i * 7919 % 100_003:x}-{i}" for i in range(n)]),
        }
    )


def test_file_stream_reads_and_seeks_like_the_plaintext(world: World) -> None:
    data = bytes(range(256)) * 1500  # six segments and a tail
    upload(world.client, world.pid, world.dm, data, "blob.bin", "files", chunk=50_000)
    with world.platform.db.read() as session:
        stored = catalog.get_live(session, world.pid, Area.FILES, "blob.bin")
        stream = FileStream(
            FileReader(world.platform, session, world.pid, blobs_of(stored.blobs)), "b"
        )
    assert stream.read(10) == data[:10]
    assert stream.read(SEGMENT) == data[10 : 10 + SEGMENT]
    stream.seek(-100, io.SEEK_END)
    assert stream.read() == data[-100:]
    stream.seek(3 * SEGMENT - 5)
    assert stream.read(10) == data[3 * SEGMENT - 5 : 3 * SEGMENT + 5]
    assert stream.tell() == 3 * SEGMENT + 5
    stream.seek(len(data) + 10)
    assert stream.read(5) == b""


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_formats_from_the_files_area(world: World, fmt: str) -> None:
    table = _table(world, 2000)  # 28,000 rows
    buf = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buf, row_group_size=5000, compression="none")
    elif fmt == "jsonl":
        write_jsonl(table.to_pylist(), buf)
    else:
        pacsv.write_csv(table, buf)
    data = buf.getvalue()
    assert len(data) > 8 * SEGMENT
    name = f"cohort/table.{fmt}"
    upload(world.client, world.pid, world.dm, data, name, "files", chunk=200_000)
    created = world.client.post(
        f"/v1/projects/{world.pid}/datasets",
        json={
            "name": "tbl",
            "source": {"area": "files", "path": name},
            "participant_column": "national_id",
        },
        headers=world.dm,
    )
    assert created.status_code == 201, created.text
    assert created.json()["rows_loaded"] == table.num_rows
    # the ids of A, B and D are permitted for HMB: sum of their values
    permitted = pc.is_in(table["national_id"], pa.array([world.nids[x] for x in "ABD"]))
    expected = pc.sum(table.filter(permitted)["value"]).as_py()
    assert world.rows("SELECT sum(value) FROM tbl") == [[expected]]
