"""Reading sources: CSV encoding detection (byte order marks, UTF-8 or Windows-1252) and
checking, delimiter and header detection and their overrides, and type overrides for CSV,
JSON Lines and Parquet (errors name the row and column; nothing is stored)."""

from __future__ import annotations

import codecs
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hvelv.datasets.errors import IngestError
from hvelv.datasets.ingest import IngestReport, _prepass, parse_type, write_jsonl
from hvelv.datasets.keys import ParticipantKeys
from hvelv.datasets.storage import read_table
from hvelv.datasets.synthetic import Cohort
from hvelv.storage.base import BlobStore
from tests.datasets.conftest import Ingest
from tests.datasets.test_ingest import objects

NAMES = ["Åse Øvrebø", "Bjørn Ærø", "Per Hansen"]


def _ids(cohort: Cohort, n: int = 3) -> list[str]:
    return [str(x) for x in cohort.national_ids.to_pylist()[:n]]


def _lines(cohort: Cohort, sep: str = ";") -> str:
    rows = [f"national_id{sep}name{sep}postcode{sep}score"]
    for n, (nid, name) in enumerate(zip(_ids(cohort), NAMES, strict=True)):
        rows.append(f"{nid}{sep}{name}{sep}0{150 + n}{sep}{n + 1}")
    return "\n".join(rows) + "\n"


def _run(run_ingest: Ingest, data: bytes, name: str = "t.csv", **options: object) -> IngestReport:
    return run_ingest(_named(data, name), keys=ParticipantKeys(), **options)


def _named(data: bytes, name: str) -> io.BytesIO:
    source = io.BytesIO(data)
    source.name = name
    return source


def _stored(report: IngestReport) -> pa.Table:
    assert report.version is not None
    return read_table(report.version.location)


# -- encodings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "detected"),
    [
        (lambda t: t.encode("utf-8"), "utf8"),
        (lambda t: codecs.BOM_UTF8 + t.encode("utf-8"), "utf8"),
        (lambda t: t.encode("cp1252"), "cp1252"),
        (lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"), "utf-16"),
        (lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"), "utf-16"),
    ],
    ids=["utf8", "utf8-bom", "cp1252", "utf16le-bom", "utf16be-bom"],
)
def test_the_encoding_is_detected(
    encoded: object, detected: str, cohort: Cohort, run_ingest: Ingest
) -> None:
    assert callable(encoded)
    report = _run(run_ingest, encoded(_lines(cohort)), participant_column="national_id")
    assert report.read["encoding"] == detected
    assert "encoding" in report.read["detected"]
    table = _stored(report)
    assert table.column_names == ["participant", "name", "postcode", "score", "_hv_pk"]
    assert table.column("name").to_pylist() == NAMES
    assert report.version is not None
    assert f"encoding:{detected}" in report.version.lineage.rules


def test_windows_1252_is_found_past_the_first_block(cohort: Cohort, run_ingest: Ingest) -> None:
    """The whole file is checked, not a sample: æøå only after 200 KiB of ASCII."""
    nid = _ids(cohort, 1)[0]
    ascii_rows = "".join(f"{nid};Per Hansen;0150;{i}\n" for i in range(8000))
    text = "national_id;name;postcode;score\n" + ascii_rows + f"{nid};Åse Ærø;0150;1\n"
    assert len(ascii_rows) > 200_000
    report = _run(
        run_ingest, text.encode("cp1252"), participant_column="national_id", block_bytes=65536
    )
    assert report.read["encoding"] == "cp1252"
    assert _stored(report).column("name").to_pylist()[-1] == "Åse Ærø"


def test_an_explicit_encoding_overrides_and_a_wrong_one_is_a_clear_error(
    cohort: Cohort, run_ingest: Ingest, store: BlobStore
) -> None:
    data = _lines(cohort).encode("cp1252")
    given = _run(run_ingest, data, participant_column="national_id", encoding="latin-1")
    assert given.read["encoding"] == "iso8859-1"
    assert given.read["detected"] == ["delimiter", "header"]
    assert _stored(given).column("name").to_pylist() == NAMES
    before = objects(store)
    with pytest.raises(IngestError) as wrong:
        _run(run_ingest, data, participant_column="national_id", encoding="utf8")
    assert wrong.value.status == 422
    assert "not valid utf8" in wrong.value.message
    assert wrong.value.details["byte"] == data.index("Å".encode("cp1252"))
    with pytest.raises(IngestError, match="unknown text encoding"):
        _run(run_ingest, data, participant_column="national_id", encoding="klingon")
    with pytest.raises(IngestError, match="unknown text encoding"):
        _run(run_ingest, data, participant_column="national_id", encoding="base64")
    assert objects(store) == before  # nothing stored by the refused ingests


def test_bytes_that_are_neither_utf8_nor_windows_1252_are_refused(run_ingest: Ingest) -> None:
    with pytest.raises(IngestError, match="cannot tell the file's encoding"):
        _run(run_ingest, b"a,b\n\x81\x8d,1\n", participant_column=None)
    # ... unless the encoding is given
    report = _run(run_ingest, b"a,b\n\x81\x8d,1\n", participant_column=None, encoding="latin-1")
    assert report.rows_loaded == 1


def test_utf8_is_checked_across_the_blocks_of_the_hashing_pass() -> None:
    """The pass reads 8 MiB blocks and skips decoding all-ASCII ones: a character split between
    two blocks is still valid, and a truncated one before an all-ASCII block is still found."""
    block = 8 << 20
    head = b"a\n" + b"x" * (block - 4)  # one byte short of the block: "€" straddles it
    whole = head + "€".encode() + b"\n" + b"y\n" * 1000
    assert _prepass(io.BytesIO(whole), "csv", "auto").encoding == "utf8"
    cut = head + b"x\xc3" + b"\n" + b"y\n" * 1000  # a lead byte, then an all-ASCII block
    assert cut[block:].isascii()
    assert _prepass(io.BytesIO(cut), "csv", "auto").encoding == "cp1252"
    with pytest.raises(IngestError) as bad:
        _prepass(io.BytesIO(cut), "csv", "utf8")
    assert bad.value.details["byte"] == block - 1


# -- delimiter and header ----------------------------------------------------------------------


@pytest.mark.parametrize("sep", [";", ",", "\t", "|"])
def test_the_delimiter_is_detected(sep: str, cohort: Cohort, run_ingest: Ingest) -> None:
    report = _run(run_ingest, _lines(cohort, sep).encode(), participant_column="national_id")
    assert report.read["delimiter"] == sep
    assert _stored(report).column("score").to_pylist() == [1, 2, 3]
    assert report.version is not None
    assert f"delimiter:{sep}" in report.version.lineage.rules


def test_semicolons_with_decimal_commas_and_quotes(cohort: Cohort, run_ingest: Ingest) -> None:
    nids = _ids(cohort)
    text = "fnr;verdi;merknad\n" + "".join(f'{nid};{n},5;"a; b, c"\n' for n, nid in enumerate(nids))
    report = _run(run_ingest, text.encode(), participant_column="fnr")
    assert report.read["delimiter"] == ";"
    table = _stored(report)
    assert table.column("verdi").to_pylist() == ["0,5", "1,5", "2,5"]
    assert table.column("merknad").to_pylist() == ["a; b, c"] * 3


def test_the_delimiter_can_be_given(cohort: Cohort, run_ingest: Ingest) -> None:
    """A ;-file read with , gives one column: the participant column is not there."""
    data = _lines(cohort).encode()
    with pytest.raises(IngestError, match="not in the source"):
        _run(run_ingest, data, participant_column="national_id", delimiter=",")
    report = _run(run_ingest, data, participant_column="national_id", delimiter=";")
    assert report.read["detected"] == ["encoding", "header"]


def test_a_missing_header_is_detected_and_can_be_given(cohort: Cohort, run_ingest: Ingest) -> None:
    body = _lines(cohort).split("\n", 1)[1].encode()  # the data rows only
    report = _run(run_ingest, body, participant_column="f0")
    assert report.read["header"] is False
    assert report.rows_loaded == 3
    table = _stored(report)
    assert table.column_names == ["participant", "f1", "f2", "f3", "_hv_pk"]
    assert report.version is not None
    assert "header:none" in report.version.lineage.rules
    # with a header line: detected, and the header can be declared either way
    with_header = _lines(cohort).encode()
    assert _run(run_ingest, with_header, participant_column="national_id").read["header"] is True
    forced = _run(run_ingest, body, participant_column="f0", header=False)
    assert forced.read["detected"] == ["encoding", "delimiter"]
    with pytest.raises(IngestError, match="not in the source"):  # first row taken as names
        _run(run_ingest, body, participant_column="f0", header=True)


def test_an_all_text_first_line_is_taken_as_the_header(run_ingest: Ingest) -> None:
    report = _run(run_ingest, b"code;label\nC0;first\nC1;second\n", participant_column=None)
    assert report.read["header"] is True
    assert _stored(report).column_names == ["code", "label"]


# -- type overrides ----------------------------------------------------------------------------


def test_parse_type() -> None:
    assert parse_type("int64").type == pa.int64()
    assert parse_type("decimal(10,2)").type == pa.decimal128(10, 2)
    assert parse_type("date(%d.%m.%Y)").format == "%d.%m.%Y"
    for bad in ("integer", "decimal(40,2)", "decimal(2,3)", "date()", "varchar(10)"):
        with pytest.raises(IngestError, match="unknown type"):
            parse_type(bad)


def test_postcodes_and_ids_keep_leading_zeros_as_text(cohort: Cohort, run_ingest: Ingest) -> None:
    data = _lines(cohort).encode()
    inferred = _stored(_run(run_ingest, data, participant_column="national_id"))
    assert inferred.column("postcode").to_pylist() == [150, 151, 152]  # Arrow's guess
    report = _run(
        run_ingest,
        data,
        participant_column="national_id",
        types={"postcode": "string", "score": "decimal(5,2)"},
    )
    table = _stored(report)
    assert table.column("postcode").to_pylist() == ["0150", "0151", "0152"]
    assert table.schema.field("score").type == pa.decimal128(5, 2)
    assert report.version is not None
    rules = report.version.lineage.rules
    assert "type:postcode:string" in rules
    assert "type:score:decimal(5,2)" in rules


def test_dates_booleans_and_nulls_from_csv(cohort: Cohort, run_ingest: Ingest) -> None:
    nid = _ids(cohort, 1)[0]
    text = (
        "fnr;visit;seen;ts;n\n"
        f"{nid};01.02.2020;true;2020-02-01T10:00:00;1\n"
        f"{nid};;0;;NA\n"
        f"{nid};31.12.2021; 1 ;2021-12-31 23:59:59; 7 \n"
    )
    report = _run(
        run_ingest,
        text.encode(),
        participant_column="fnr",
        types={"visit": "date(%d.%m.%Y)", "seen": "bool", "ts": "timestamp", "n": "int32"},
        generalise={"visit": "year"},
    )
    table = _stored(report)
    assert table.column("visit").to_pylist() == [2020, None, 2021]
    assert table.column("seen").to_pylist() == [True, False, True]
    assert table.schema.field("ts").type == pa.timestamp("us")
    assert table.column("ts").to_pylist()[1] is None
    assert table.column("n").to_pylist() == [1, None, 7]
    assert table.schema.field("n").type == pa.int32()


def test_a_value_that_does_not_convert_names_row_and_column(
    cohort: Cohort, run_ingest: Ingest, store: BlobStore
) -> None:
    nid = _ids(cohort, 1)[0]
    rows = [f"{nid};{i}" for i in range(5000)]
    rows[4321] = f"{nid};12x"
    text = "fnr;amount\n" + "\n".join(rows) + "\n"
    before = objects(store)
    with pytest.raises(IngestError) as failed:
        _run(
            run_ingest,
            text.encode(),
            participant_column="fnr",
            types={"amount": "int64"},
            block_bytes=4096,
            batch_rows=1000,
            row_group_rows=1000,
        )
    assert failed.value.status == 422
    assert failed.value.details == {"column": "amount", "row": 4322, "type": "int64"}
    assert "12x" not in failed.value.message  # values are not echoed
    assert objects(store) == before  # nothing stored, no upload left


def test_unknown_and_forbidden_type_overrides(cohort: Cohort, run_ingest: Ingest) -> None:
    data = _lines(cohort).encode()
    with pytest.raises(IngestError) as unknown:
        _run(
            run_ingest,
            data,
            participant_column="national_id",
            types={"postcod": "string", "scor": "int64", "score": "int32"},
        )
    assert unknown.value.details == {"columns": ["postcod", "scor"]}
    assert "postcod, scor" in unknown.value.message
    with pytest.raises(IngestError, match="participant column"):
        _run(run_ingest, data, participant_column="national_id", types={"national_id": "string"})
    with pytest.raises(IngestError, match="dropped"):
        _run(
            run_ingest,
            data,
            participant_column="national_id",
            drop=frozenset({"name"}),
            types={"name": "string"},
        )
    with pytest.raises(IngestError, match="unknown type"):
        _run(run_ingest, data, participant_column="national_id", types={"score": "integer"})


def test_types_cast_parquet_and_json_lines(
    cohort: Cohort, run_ingest: Ingest, tmp_path: Path
) -> None:
    nids = _ids(cohort)
    table = pa.table(
        {
            "national_id": nids,
            "amount": pa.array([1.0, 2.0, 3.0]),
            "code": pa.array([7, 8, 9]),
            "when": ["2020-01-02", "2021-03-04", None],
        }
    )
    types = {"amount": "int32", "code": "string", "when": "date"}
    pq.write_table(table, tmp_path / "t.parquet")
    with open(tmp_path / "t.jsonl", "wb") as f:
        write_jsonl(table.to_pylist(), f)
    for name in ("t.parquet", "t.jsonl"):
        report = run_ingest(tmp_path / name, keys=ParticipantKeys(), types=types)
        stored = _stored(report)
        assert stored.schema.field("amount").type == pa.int32(), name
        assert stored.column("code").to_pylist() == ["7", "8", "9"]
        assert stored.column("when").to_pylist()[2] is None
        assert str(stored.column("when").to_pylist()[0]) == "2020-01-02"
    lossy = table.set_column(1, "amount", pa.array([1.0, 2.5, 3.0]))
    pq.write_table(lossy, tmp_path / "lossy.parquet")
    with pytest.raises(IngestError) as failed:
        run_ingest(tmp_path / "lossy.parquet", keys=ParticipantKeys(), types={"amount": "int64"})
    assert failed.value.details == {"column": "amount", "row": 2, "type": "int64"}
    with pytest.raises(IngestError, match="cannot be converted"):
        run_ingest(tmp_path / "t.parquet", keys=ParticipantKeys(), types={"amount": "date"})
