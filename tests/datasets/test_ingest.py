"""Ingest: formats, pseudonymisation, rejection reports, all-or-nothing, rules, encryption."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from hvelv.datasets.errors import IngestError, IngestRejected
from hvelv.datasets.ingest import write_jsonl
from hvelv.datasets.keys import PK_COLUMN, ParticipantKeys
from hvelv.datasets.storage import BlobLocation, read_table
from hvelv.storage.base import BlobStore
from tests.datasets.conftest import Ingest, pseudonym_of

BAD = "15108695077"  # checksum wrong
SHORT = "1510869508"


def write(table: pa.Table, path: Path, fmt: str) -> Path:
    if fmt == "csv":
        pacsv.write_csv(table, path)
    elif fmt == "parquet":
        pq.write_table(table, path)
    else:
        with open(path, "wb") as f:
            write_jsonl(table.to_pylist(), f)
    return path


def with_ids(table: pa.Table, changes: dict[int, str | None]) -> pa.Table:
    ids = table.column("national_id").to_pylist()
    for row, value in changes.items():
        ids[row] = value
    i = table.schema.get_field_index("national_id")
    return table.set_column(i, "national_id", pa.array(ids, pa.string()))


def objects(store: BlobStore) -> list[str]:
    return [o.key for o in store.list()] + [u.key for u in store.list_uploads()]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_ingest_pseudonymises_and_round_trips(
    fmt: str, tmp_path: Path, visits: pa.Table, run_ingest: Ingest, store: BlobStore
) -> None:
    src = write(visits, tmp_path / f"visits.{fmt}", fmt)
    keys = ParticipantKeys()
    report = run_ingest(src, keys=keys, drop=frozenset({"name"}))
    assert report.rows_read == report.rows_loaded == visits.num_rows
    version = report.version
    assert version is not None
    stored = read_table(version.location)
    assert stored.num_rows == visits.num_rows
    assert stored.column_names[0] == "participant"
    assert "national_id" not in stored.column_names
    assert "name" not in stored.column_names
    expected = [pseudonym_of(n) for n in visits.column("national_id").to_pylist()]
    assert stored.column("participant").to_pylist() == expected
    # dense keys: the registry's key of each row's pseudonym
    assert stored.column(PK_COLUMN).to_pylist() == [keys.get(p) for p in expected]
    assert len(keys) == len(set(expected))
    assert version.lineage.source_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert version.lineage.source_format == fmt
    assert "pseudonymise:national_id->participant" in version.lineage.rules
    assert "drop:name" in version.lineage.rules
    assert version.lineage.created_by == "data-manager-1"
    assert objects(store) == [version.location.key]


def test_invalid_ids_are_reported_by_row_and_nothing_is_stored(
    tmp_path: Path, visits: pa.Table, run_ingest: Ingest, store: BlobStore
) -> None:
    bad = with_ids(visits, {4: BAD, 17: SHORT, 300: None, 599: "abcdefghijk"})
    src = write(bad, tmp_path / "bad.csv", "csv")
    keys = ParticipantKeys()
    with pytest.raises(IngestRejected) as info:
        run_ingest(src, keys=keys, block_bytes=4096, batch_rows=64)  # many small batches
    report = info.value.report
    assert [(r.row, r.reason) for r in report.rejections] == [
        (5, "checksum"),
        (18, "length"),
        (301, "missing"),
        (600, "not_digits"),
    ]
    assert report.rows_read == visits.num_rows
    assert report.rows_loaded == 0
    assert info.value.details["rows_rejected"] == 4
    assert objects(store) == []  # nothing half-loaded, no upload left behind
    assert BAD not in str(info.value.details)  # the report never repeats the number


def test_not_enrolled_participants_are_rejected(
    tmp_path: Path, visits: pa.Table, run_ingest: Ingest, store: BlobStore
) -> None:
    outsider = visits.column("national_id")[7].as_py()
    src = write(visits, tmp_path / "v.parquet", "parquet")
    with pytest.raises(IngestRejected) as info:
        run_ingest(src, keys=ParticipantKeys(), enrolled=lambda nid: nid != outsider)
    rows = [i + 1 for i, n in enumerate(visits.column("national_id").to_pylist()) if n == outsider]
    assert [r.row for r in info.value.report.rejections] == rows
    assert {r.reason for r in info.value.report.rejections} == {"not_enrolled"}
    assert objects(store) == []


def test_keep_valid_stores_the_valid_rows_and_reports_the_rest(
    tmp_path: Path, visits: pa.Table, run_ingest: Ingest
) -> None:
    bad = with_ids(visits, {0: BAD, 599: None})
    src = write(bad, tmp_path / "bad.jsonl", "jsonl")
    report = run_ingest(src, keys=ParticipantKeys(), keep_valid=True)
    assert report.rows_loaded == visits.num_rows - 2
    assert [r.row for r in report.rejections] == [1, 600]
    assert report.version is not None
    stored = read_table(report.version.location)
    assert stored.num_rows == visits.num_rows - 2
    assert "keep_valid" in report.version.lineage.rules


def test_synthetic_numbers_need_test_mode(
    tmp_path: Path, visits: pa.Table, run_ingest: Ingest, store: BlobStore
) -> None:
    src = write(visits, tmp_path / "v.csv", "csv")
    with pytest.raises(IngestRejected) as info:
        run_ingest(src, keys=ParticipantKeys(), allow_synthetic=False)
    assert info.value.report.reasons == {"synthetic_not_allowed": visits.num_rows}
    assert objects(store) == []


def test_generalisation_rules(tmp_path: Path, run_ingest: Ingest) -> None:
    table = pa.table(
        {
            "national_id": ["15108695088", "31129956715"],
            "birth": ["1986-10-15", "1999-12-31"],
            "visit": ["2021-03-04", "2020-11-30"],
            "postcode": ["0150", "9990"],
            "age": [37, 24],
            "phone": ["+47 22 00 00 00", "+47 99 99 99 99"],
        }
    )
    src = write(table, tmp_path / "t.csv", "csv")
    report = run_ingest(
        src,
        keys=ParticipantKeys(),
        allow_synthetic=False,
        drop=frozenset({"phone"}),
        generalise={
            "birth": "year",
            "visit": "year_month",
            "postcode": "postcode2",
            "age": "age_band5",
        },
    )
    assert report.version is not None
    stored = read_table(report.version.location).drop_columns([PK_COLUMN])
    assert stored.to_pylist() == [
        {"participant": pseudonym_of("15108695088"), "birth": 1986, "visit": "2021-03",
         "postcode": "01", "age": "35-39"},
        {"participant": pseudonym_of("31129956715"), "birth": 1999, "visit": "2020-11",
         "postcode": "99", "age": "20-24"},
    ]  # fmt: skip
    rules = report.version.lineage.rules
    assert "generalise:postcode:postcode2" in rules
    assert "drop:phone" in rules


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"participant_column": "nope"}, "not in the source: nope"),
        ({"drop": frozenset({"missing_col"})}, "missing_col"),
        ({"generalise": {"age": "decade"}}, "unknown generalisation rule"),
        ({"generalise": {"national_id": "year"}}, "cannot be dropped or generalised"),
        ({"participant_output": "icd10"}, "already exists"),
        ({"generalise": {"icd10": "year"}}, "does not hold dates"),
    ],
)
def test_bad_options_are_clear_errors(
    options: dict[str, object], message: str, tmp_path: Path, visits: pa.Table, run_ingest: Ingest,
    store: BlobStore,
) -> None:  # fmt: skip
    src = write(visits, tmp_path / "v.parquet", "parquet")
    with pytest.raises(IngestError, match=message):
        run_ingest(src, keys=ParticipantKeys(), **options)
    assert objects(store) == []


def test_reserved_and_unreadable_sources(tmp_path: Path, run_ingest: Ingest) -> None:
    src = write(
        pa.table({"national_id": ["15108695088"], "_hv_pk": [1]}), tmp_path / "r.csv", "csv"
    )
    with pytest.raises(IngestError, match="reserved"):
        run_ingest(src, keys=ParticipantKeys(), allow_synthetic=False)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(IngestError, match="cannot read the parquet source"):
        run_ingest(junk, keys=ParticipantKeys())
    with pytest.raises(IngestError, match="format"):
        run_ingest(tmp_path / "file.xyz", keys=ParticipantKeys())


def test_csv_delimiter_detection_and_file_objects(run_ingest: Ingest) -> None:
    data = b"national_id;score\n15108695088;3\n31129956715;4\n"
    stream = io.BytesIO(data)
    report = run_ingest(stream, keys=ParticipantKeys(), allow_synthetic=False, format="csv")
    assert report.version is not None
    stored = read_table(report.version.location)
    assert stored.column("score").to_pylist() == [3, 4]
    assert report.version.lineage.source_sha256 == hashlib.sha256(data).hexdigest()


def test_the_stored_blob_holds_no_plaintext(
    tmp_path: Path, visits: pa.Table, run_ingest: Ingest, store: BlobStore
) -> None:
    src = write(visits, tmp_path / "v.csv", "csv")
    report = run_ingest(src, keys=ParticipantKeys())
    assert report.version is not None
    raw = store.read_bytes(report.version.location.key)
    known = [
        pseudonym_of(visits.column("national_id")[0].as_py()).encode(),
        visits.column("icd10")[0].as_py().encode(),
        b"haemoglobin",
        b"PAR1",  # the Parquet magic
    ]
    # The same values are in the decrypted Parquet (so this test can fail) ...
    plain = pa.BufferOutputStream()
    pq.write_table(read_table(report.version.location), plain, compression="none")
    for value in known:
        assert value in plain.getvalue().to_pybytes()
    # ... but not in what is stored.
    for value in known:
        assert value not in raw


def test_wrong_key_cannot_read(tmp_path: Path, visits: pa.Table, run_ingest: Ingest) -> None:
    src = write(visits, tmp_path / "v.csv", "csv")
    report = run_ingest(src, keys=ParticipantKeys())
    assert report.version is not None
    loc = report.version.location
    with pytest.raises(ValueError, match="authentication"):
        read_table(BlobLocation(loc.store, loc.key, os.urandom(32)))


def test_ingest_streams_in_blocks(tmp_path: Path, visits: pa.Table, run_ingest: Ingest) -> None:
    src = write(visits, tmp_path / "v.csv", "csv")
    seen: list[int] = []
    report = run_ingest(
        src, keys=ParticipantKeys(), block_bytes=8192, batch_rows=50, progress=seen.append
    )
    assert len(seen) > 5  # many blocks, not one read of the whole file
    assert seen == sorted(seen)
    assert seen[-1] == report.rows_read == visits.num_rows
