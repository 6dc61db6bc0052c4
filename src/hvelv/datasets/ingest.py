"""Ingest CSV, Parquet or JSON Lines into an encrypted, pseudonymised dataset version.

Streaming with bounded memory: the source is read in blocks (pyarrow's streaming CSV and JSON
readers, Parquet batch by batch), each batch is checked and transformed, and written through
:class:`~hvelv.datasets.storage.EncryptedParquetWriter` (one row group and one segment in memory).

Per batch:

* the participant column (declared by the data manager) is validated as a national identity
  number (:func:`hvelv.consent.national_id.parse_national_id`) and replaced by the participant's
  project pseudonym from the injected ``pseudonymise(normalized_national_id) -> str | None``
  (``None``: not enrolled in the project; the consent store provides the keyed HMAC). Each
  distinct number is validated and pseudonymised once per ingest (a cache; plain 11-digit
  numbers are validated in bulk by :func:`hvelv.datasets.ids.surely_valid`, which agrees with
  ``parse_national_id``), rows are mapped with vectorised dictionary lookups. The pseudonym
  also gets the participant's dense key (:class:`~hvelv.datasets.keys.ParticipantKeys`) in the
  internal column ``_hv_pk``;
* rows whose number is missing, invalid (``length``, ``checksum``...) or not enrolled are
  reported by row number (1-based data rows, the header not counted) with a reason code — never
  with the number itself;
* direct identifier columns are dropped and generalisation rules applied (:data:`RULES`).

All-or-nothing by default: one rejected row and nothing is stored (the upload is aborted), and
:class:`~hvelv.datasets.errors.IngestRejected` carries the report. With ``keep_valid=True`` the
valid rows are stored and the report lists the rest. The result records lineage: the source's
SHA-256, its format, the rules applied, who ran it.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from hvelv.consent.national_id import InvalidNationalId, parse_national_id
from hvelv.datasets.errors import IngestError, IngestRejected
from hvelv.datasets.ids import surely_valid
from hvelv.datasets.keys import PK_COLUMN, ParticipantKeys
from hvelv.datasets.storage import BlobLocation, EncryptedParquetWriter, StoredObject

__all__ = [
    "RULES",
    "TYPE_NAMES",
    "DatasetVersion",
    "IngestOptions",
    "IngestReport",
    "Lineage",
    "Rejection",
    "TypeSpec",
    "check_options",
    "format_by_name",
    "ingest",
    "parse_type",
    "text_encoding",
    "write_jsonl",
]

Format = Literal["csv", "parquet", "jsonl"]
Source = str | Path | IO[bytes]
Pseudonymise = Callable[[str], "str | None"]

#: generalisation rules: name -> what it does
RULES: Final = {
    "year": "a date becomes its year (integer)",
    "year_month": "a date becomes 'YYYY-MM'",
    "postcode2": "a postcode keeps its first two digits",
    "age_band5": "an age becomes a 5-year band such as '40-44'",
}
RESERVED_COLUMN_PREFIX: Final = "_hv"
AUTO: Final = "auto"
MISSING: Final = "missing"
NOT_ENROLLED: Final = "not_enrolled"
_SUFFIXES: Final[dict[str, Format]] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """How to read the source and what to do with its columns.

    ``participant_column=None`` makes a dataset without participants; it is only queryable when
    ``personal_data=False`` (the project marks it as holding no personal data).

    CSV: ``encoding`` ``auto`` detects it (a byte order mark; else UTF-8 if the whole file is
    valid UTF-8, otherwise Windows-1252), ``delimiter=None`` sniffs it and ``header=None``
    detects whether the first line is a header. ``types`` overrides inferred types,
    ``{column: "string" | "int64" | "decimal(10,2)" | "date(%d.%m.%Y)" ...}`` (:func:`parse_type`).
    """

    participant_column: str | None
    participant_output: str = "participant"
    format: Format | None = None
    drop: frozenset[str] = frozenset()
    generalise: Mapping[str, str] = field(default_factory=dict)
    keep_valid: bool = False
    personal_data: bool = True
    allow_synthetic: bool = False
    today: dt.date | None = None
    delimiter: str | None = None
    header: bool | None = None
    encoding: str = AUTO
    types: Mapping[str, str] = field(default_factory=dict)
    block_bytes: int = 16 << 20
    batch_rows: int = 1 << 20
    row_group_rows: int = 1 << 20
    max_reported: int = 1000


@dataclass(frozen=True, slots=True)
class Rejection:
    row: int
    reason: str


@dataclass(frozen=True, slots=True)
class Lineage:
    source_name: str
    source_sha256: str
    source_format: str
    rules: tuple[str, ...]
    created_by: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """One immutable, stored dataset version (what the metadata table will hold)."""

    name: str
    version: int
    location: BlobLocation
    schema: pa.Schema
    rows: int
    participant_column: str | None
    personal_data: bool
    lineage: Lineage
    stored: StoredObject

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(slots=True)
class IngestReport:
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    version: DatasetVersion | None = None
    #: how the source was read: format, and for CSV encoding, delimiter, header and which of
    #: them were detected rather than given
    read: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_rejected": self.rows_rejected,
            "reasons": dict(self.reasons),
            "rejections": [{"row": r.row, "reason": r.reason} for r in self.rejections],
            "rejections_truncated": self.rows_rejected > len(self.rejections),
        }


# -- reading sources -----------------------------------------------------------------------------


def format_by_name(name: str) -> Format | None:
    """The format a file name's suffix tells (``None``: it does not)."""
    return _SUFFIXES.get(Path(name).suffix.lower())


def _detect_format(source: Source, fmt: Format | None) -> Format:
    if fmt is not None:
        return fmt
    name = str(source) if isinstance(source, str | Path) else str(getattr(source, "name", ""))
    suffix = Path(name).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    raise IngestError("cannot tell the source format from its name; give format=")


def _chunks(source: Source, size: int = 8 << 20) -> Iterator[bytes]:
    """The source's bytes from its current position; a file object is put back there."""
    if isinstance(source, str | Path):
        with open(source, "rb") as f:
            while chunk := f.read(size):
                yield chunk
        return
    if not source.seekable():
        raise IngestError("a file object source must be seekable")
    start = source.tell()
    try:
        while chunk := source.read(size):
            yield chunk
    finally:
        source.seek(start)


#: byte order marks, longest first (a UTF-32 LE mark starts like a UTF-16 LE one)
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: bytes Windows-1252 leaves undefined (Python's cp1252 codec refuses them)
_CP1252_UNDEFINED: Final = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")


def text_encoding(name: str) -> str:
    """The codec name for an explicit ``encoding`` (``utf8`` for UTF-8, which Arrow reads
    natively); :class:`IngestError` for a name that is not a text encoding."""
    try:
        info = codecs.lookup(name)
        b"x".decode(info.name, "ignore")  # refuses binary codecs such as base64 or zlib
    except LookupError:
        raise IngestError(
            f"unknown text encoding {name!r} (e.g. utf8, cp1252, latin-1, utf-16, or auto)",
            details={"encoding": name},
        ) from None
    return "utf8" if info.name == "utf-8" else info.name


@dataclass(slots=True)
class _Prepass:
    sha256: str
    encoding: str | None  # CSV only: what the text is decoded with


def _prepass(source: Source, fmt: Format, encoding: str) -> _Prepass:
    """One pass over the source: its SHA-256 and, for CSV, its encoding — detected
    (``auto``: a byte order mark, else valid UTF-8 is ``utf8`` and anything else
    Windows-1252) or checked (an explicit encoding must decode the whole file)."""
    digest = hashlib.sha256()
    if fmt != "csv":
        for chunk in _chunks(source):
            digest.update(chunk)
        return _Prepass(digest.hexdigest(), None)
    detect = encoding == AUTO
    chosen: str | None = None if detect else text_encoding(encoding)
    decoder: codecs.IncrementalDecoder | None = None
    utf8 = True
    failed_at: int | None = None  # byte offset where the file stopped being valid UTF-8
    cp1252_ok = True
    offset = 0
    for chunk in _chunks(source):
        digest.update(chunk)
        if offset == 0 and detect:
            chosen = next((name for bom, name in _BOMS if chunk.startswith(bom)), None)
        if decoder is None:
            utf8 = chosen is None or chosen == "utf8"
            decoder = codecs.getincrementaldecoder(chosen if chosen and not utf8 else "utf-8")()
        # ASCII between whole UTF-8 characters is valid UTF-8 (and Windows-1252): no decoding
        # (bytes.isascii is about ten times faster than decoding)
        pending = len(decoder.getstate()[0])  # bytes of a character the last block began
        plain = utf8 and not pending and chunk.isascii()
        if failed_at is None and not plain:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:  # exc.start counts from the pending bytes
                failed_at = offset - pending + exc.start
        if detect and chosen is None and cp1252_ok and not plain:
            cp1252_ok = not any(b in chunk for b in _CP1252_UNDEFINED)
        offset += len(chunk)
    if failed_at is None and decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            failed_at = offset
    if not detect or chosen is not None:  # given, or a byte order mark
        name = chosen or "utf8"
        if failed_at is not None:
            raise IngestError(
                f"the file is not valid {name} text (at byte {failed_at}); give its encoding "
                "(e.g. cp1252, latin-1, utf-16) or leave encoding to auto",
                details={"encoding": name, "byte": failed_at},
            )
        return _Prepass(digest.hexdigest(), name)
    if failed_at is None:
        return _Prepass(digest.hexdigest(), "utf8")
    if not cp1252_ok:
        raise IngestError(
            "cannot tell the file's encoding: it is neither UTF-8 nor Windows-1252 text; "
            "give encoding (e.g. latin-1, utf-16)",
            details={"byte": failed_at},
        )
    return _Prepass(digest.hexdigest(), "cp1252")


def _sample(source: Source, encoding: str) -> str:
    """The first 64 KiB as text, cut after the last complete line."""
    sample = next(_chunks(source, 64 << 10), b"")
    codec = "utf-8-sig" if encoding == "utf8" else encoding
    text = codecs.getincrementaldecoder(codec)(errors="replace").decode(sample)
    if "\n" in text:
        text = text[: text.rindex("\n")]
    return text


def _sniff_delimiter(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?$")
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2}([ T][\d:.]+)?|\d{1,2}\.\d{1,2}\.\d{4})$")


def _kind(cell: str) -> str | None:
    value = cell.strip()
    if not value:
        return None
    if _NUMBER.match(value) or _DATE.match(value):
        return "value"
    return "text"


def _detect_header(sample: str, delimiter: str) -> bool:
    """Whether the first line is a header: yes when some column has a text first cell over
    numbers or dates; no when, instead, some column has a number or date in its first cell as in
    the rest; yes when nothing tells (all text columns)."""
    rows = list(csv.reader(sample.splitlines()[:101], delimiter=delimiter))
    if len(rows) < 2:
        return True
    first, rest = rows[0], rows[1:]
    data_like = False
    for i, cell in enumerate(first):
        below = {_kind(r[i]) for r in rest if i < len(r)} - {None}
        kind = _kind(cell)
        if kind == "text" and below == {"value"}:
            return True
        if kind == "value" and below == {"value"}:
            data_like = True
    return not data_like


@dataclass(frozen=True, slots=True)
class _CsvRead:
    encoding: str
    delimiter: str
    header: bool


def _csv_settings(source: Source, opts: IngestOptions, encoding: str) -> _CsvRead:
    sample = _sample(source, encoding) if opts.delimiter is None or opts.header is None else ""
    delimiter = opts.delimiter or _sniff_delimiter(sample)
    header = opts.header if opts.header is not None else _detect_header(sample, delimiter)
    return _CsvRead(encoding, delimiter, header)


def _batches(
    source: Source, fmt: Format, opts: IngestOptions, read: _CsvRead | None
) -> Iterator[pa.RecordBatch]:
    src: Any = str(source) if isinstance(source, Path) else source
    try:
        if fmt == "csv":
            assert read is not None
            # overridden columns are read as text and converted by _convert (errors by row)
            types: dict[str, pa.DataType] = {c: pa.string() for c in opts.types}
            if opts.participant_column is not None:
                types.setdefault(opts.participant_column, pa.string())
            for column, rule in opts.generalise.items():
                if rule == "postcode2":
                    types.setdefault(column, pa.string())
            reader: Any = pacsv.open_csv(
                src,
                read_options=pacsv.ReadOptions(
                    block_size=opts.block_bytes,
                    encoding=read.encoding,
                    autogenerate_column_names=not read.header,
                ),
                parse_options=pacsv.ParseOptions(delimiter=read.delimiter),
                convert_options=pacsv.ConvertOptions(column_types=types),
            )
            for batch in reader:
                _check_text(batch)
                yield batch
        elif fmt == "jsonl":
            fields = []
            if opts.participant_column is not None:
                fields.append((opts.participant_column, pa.string()))
            reader = pajson.open_json(
                src,
                read_options=pajson.ReadOptions(block_size=opts.block_bytes),
                parse_options=pajson.ParseOptions(
                    explicit_schema=pa.schema(fields) if fields else None,
                    unexpected_field_behavior="infer",
                ),
            )
            yield from reader
        else:
            parquet = pq.ParquetFile(src)
            yield from parquet.iter_batches(batch_size=opts.batch_rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        message = str(exc).splitlines()[0][:300]
        if "invalid UTF8" in message:
            message += " (the file is not UTF-8: give its encoding or leave encoding to auto)"
        raise IngestError(f"cannot read the {fmt} source: {message}") from None


def _check_text(batch: pa.RecordBatch) -> None:
    """Arrow reads text that does not decode as binary: that is a wrong encoding."""
    for f in batch.schema:
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            raise IngestError(
                f"column {f.name!r} is not valid text in the file's encoding; give the right "
                "encoding or leave encoding to auto",
                details={"column": f.name},
            )


# -- type overrides ----------------------------------------------------------------------------

#: type names accepted in overrides, besides ``decimal(p,s)``, ``date(FORMAT)`` and
#: ``timestamp(FORMAT)`` (strptime formats such as ``%d.%m.%Y``)
TYPE_NAMES: Final[dict[str, pa.DataType]] = {
    "string": pa.string(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamp_utc": pa.timestamp("us", tz="UTC"),
}
_DECIMAL = re.compile(r"^decimal\((\d{1,2}),\s*(\d{1,2})\)$")
_FORMATTED = re.compile(r"^(date|timestamp)\((%[^()]{1,60})\)$")
#: what a CSV cell holding "no value" looks like (Arrow's defaults for non-text columns)
_NULL_TOKENS: Final = pa.array(list(pacsv.ConvertOptions().null_values), pa.string())


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """A parsed override: the Arrow type, and the strptime format for dates given as text."""

    name: str
    type: pa.DataType
    format: str | None = None


def parse_type(name: str) -> TypeSpec:
    """``"int64"``, ``"decimal(10,2)"``, ``"date(%d.%m.%Y)"`` ... as a :class:`TypeSpec`."""
    text = name.strip()
    if text in TYPE_NAMES:
        return TypeSpec(text, TYPE_NAMES[text])
    if m := _DECIMAL.match(text):
        precision, scale = int(m.group(1)), int(m.group(2))
        if 1 <= precision <= 38 and scale <= precision:
            return TypeSpec(f"decimal({precision},{scale})", pa.decimal128(precision, scale))
    if m := _FORMATTED.match(text):
        kind = TYPE_NAMES[m.group(1)]
        return TypeSpec(text, kind, m.group(2))
    raise IngestError(
        f"unknown type {name!r}; one of {', '.join(TYPE_NAMES)}, decimal(p,s) (p <= 38), "
        "date(FORMAT) or timestamp(FORMAT)",
        details={"type": name},
    )


def _cast(array: pa.Array, spec: TypeSpec) -> pa.Array:
    if spec.format is not None and pa.types.is_string(array.type):
        parsed = pc.strptime(array, format=spec.format, unit="us")
        return parsed if spec.type == pa.timestamp("us") else pc.cast(parsed, spec.type)
    return pc.cast(array, spec.type)


def _first_bad(array: pa.Array, spec: TypeSpec) -> int:
    """The index of the first value that does not convert (bisection; ``array`` fails)."""
    lo, hi = 0, len(array)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            _cast(array.slice(lo, mid - lo), spec)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            hi = mid
        else:
            lo = mid
    return lo


def _convert(array: pa.Array, spec: TypeSpec, column: str, first_row: int) -> pa.Array:
    """``array`` as ``spec``; :class:`IngestError` naming the column and (1-based) row of the
    first value that does not convert. Text cells that are blank or a null token become null."""
    if array.type == spec.type and spec.format is None:
        return array
    if pa.types.is_string(array.type) and not pa.types.is_string(spec.type):
        text = pc.utf8_trim_whitespace(array)
        array = pc.if_else(
            pc.is_in(text, value_set=_NULL_TOKENS), pa.scalar(None, pa.string()), text
        )
    try:
        return _cast(array, spec)
    except pa.ArrowNotImplementedError:
        raise IngestError(
            f"column {column!r} ({array.type}) cannot be converted to {spec.name}",
            details={"column": column, "type": spec.name},
        ) from None
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        row = first_row + _first_bad(array, spec) + 1
        raise IngestError(
            f"column {column!r}, row {row}: the value is not a {spec.name}; nothing was stored",
            details={"column": column, "row": row, "type": spec.name},
        ) from None


def _apply_types(
    batch: pa.RecordBatch, types: Mapping[str, TypeSpec], first_row: int
) -> pa.RecordBatch:
    if not types:
        return batch
    arrays = list(batch.columns)
    names = batch.schema.names
    for i, name in enumerate(names):
        spec = types.get(name)
        if spec is not None:
            arrays[i] = _convert(arrays[i], spec, name, first_row)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _rebatch(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Join small blocks into batches of about ``rows`` rows (fewer per-batch lookups)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            pending, count = [], 0
    if pending and count:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


# -- transforming ----------------------------------------------------------------------------------


def _as_date(array: pa.Array, column: str) -> pa.Array:
    if pa.types.is_date(array.type) or pa.types.is_timestamp(array.type):
        return array
    try:
        return pc.cast(array, pa.date32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise IngestError(f"column {column!r} does not hold dates") from None


def _generalise(array: pa.Array, rule: str, column: str) -> pa.Array:
    if rule == "year":
        return pc.cast(pc.year(_as_date(array, column)), pa.int16())
    if rule == "year_month":
        return pc.strftime(_as_date(array, column), format="%Y-%m")
    if rule == "postcode2":
        text = array if pa.types.is_string(array.type) else pc.cast(array, pa.string())
        return pc.utf8_slice_codeunits(pc.utf8_trim_whitespace(text), 0, 2)
    if rule == "age_band5":
        try:
            age = pc.cast(array, pa.int32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise IngestError(f"column {column!r} does not hold ages") from None
        low = pc.multiply(pc.divide(age, 5), 5)
        high = pc.add(low, 4)
        return pc.binary_join_element_wise(
            pc.cast(low, pa.string()), pc.cast(high, pa.string()), "-"
        )
    raise IngestError(f"unknown generalisation rule {rule!r} (known: {', '.join(RULES)})")


class _Identifiers:
    """Validate, pseudonymise and key each distinct national id once per ingest.

    The numbers seen so far are kept as one Arrow array (``_known``) with, aligned to it, the
    code (dense key, or ``-1 - reason``) and the pseudonym of each. A batch is mapped with
    Arrow's vectorised hash lookup (``index_in``); only numbers never seen before are handled in
    Python, the plainly valid ones in bulk (:func:`~hvelv.datasets.ids.surely_valid`).
    """

    def __init__(self, pseudonymise: Pseudonymise, keys: ParticipantKeys, opts: IngestOptions):
        self._pseudonymise = pseudonymise
        self._keys = keys
        self._opts = opts
        self.reasons: list[str] = [MISSING, NOT_ENROLLED]
        self._known: pa.Array = pa.array([], pa.string())
        self._codes: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._names: pa.Array = pa.array([], pa.string())

    def _reason(self, code: str) -> int:
        if code not in self.reasons:
            self.reasons.append(code)
        return -1 - self.reasons.index(code)

    def _resolve(self, raw: str) -> tuple[int, str]:
        """Code and pseudonym ("" when rejected) of one number, by ``parse_national_id``."""
        if not raw.strip():
            return self._reason(MISSING), ""
        try:
            parsed = parse_national_id(
                raw, allow_synthetic=self._opts.allow_synthetic, today=self._opts.today
            )
        except InvalidNationalId as exc:
            return self._reason(exc.reason_code), ""
        pseudonym = self._pseudonymise(parsed.normalized)
        if pseudonym is None:
            return self._reason(NOT_ENROLLED), ""
        return self._keys.key(pseudonym), pseudonym

    def _learn(self, fresh: list[str]) -> None:
        """Resolve numbers seen for the first time and add them to the known ones."""
        sure = surely_valid(
            fresh, allow_synthetic=self._opts.allow_synthetic, today=self._opts.today
        )
        not_enrolled = self._reason(NOT_ENROLLED)
        key = self._keys.key
        pseudonymise = self._pseudonymise
        codes = np.empty(len(fresh), dtype=np.int64)
        names: list[str] = []
        for n, (raw, ok) in enumerate(zip(fresh, sure.tolist(), strict=True)):
            if ok:
                pseudonym = pseudonymise(raw)  # raw is the normalized number here
                if pseudonym is None:
                    codes[n] = not_enrolled
                    names.append("")
                else:
                    codes[n] = key(pseudonym)
                    names.append(pseudonym)
            else:  # the exact reason, or a valid number written with separators
                codes[n], name = self._resolve(raw)
                names.append(name)
        self._known = pa.concat_arrays([self._known, pa.array(fresh, pa.string())])
        self._codes = np.concatenate([self._codes, codes])
        self._names = pa.concat_arrays([self._names, pa.array(names, pa.string())])

    def codes(self, column: pa.Array) -> tuple[npt.NDArray[np.int64], pa.Array]:
        """Per row: the dense key (>= 0) or ``-1 - reason index``; and the pseudonym per row
        (an empty string for rejected rows, which are filtered out later)."""
        if not pa.types.is_string(column.type):
            if pa.types.is_integer(column.type):
                column = pc.utf8_lpad(pc.cast(column, pa.string()), 11, "0")
            else:
                column = pc.cast(column, pa.string())
        position = pc.index_in(column, value_set=self._known)
        unknown = pc.and_(pc.is_null(position), pc.is_valid(column))
        index = np.array(pc.fill_null(position, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        if pc.any(unknown).as_py():
            fresh = pc.unique(column.filter(unknown))
            offset = len(self._known)
            self._learn(fresh.to_pylist())
            rows = np.flatnonzero(unknown.to_numpy(zero_copy_only=False))
            found = pc.index_in(column.take(pa.array(rows)), value_set=fresh).to_numpy()
            index[rows] = offset + found
        present = index >= 0
        out = np.full(len(index), -1, dtype=np.int64)  # -1 == MISSING (a null number)
        out[present] = self._codes[index[present]]
        if len(self._names) == 0:  # nothing valid seen yet (e.g. only empty numbers)
            return out, pa.array([""] * len(index), pa.string())
        pseudonyms = self._names.take(pa.array(np.where(present, index, 0)))
        if not present.all():
            pseudonyms = pc.if_else(pa.array(present), pseudonyms, "")
        return out, pseudonyms


def _plan_columns(schema: pa.Schema, opts: IngestOptions) -> list[str]:
    names = schema.names
    unknown = sorted(set(opts.types) - set(names))
    if unknown:
        raise IngestError(
            f"types given for column(s) not in the source: {', '.join(unknown)}",
            details={"columns": unknown},
        )
    if opts.participant_column in opts.types:
        raise IngestError("the participant column is always read as text; give it no type")
    dropped = sorted(set(opts.types) & set(opts.drop))
    if dropped:
        raise IngestError(f"types given for dropped column(s): {', '.join(dropped)}")
    if len(set(names)) != len(names):
        raise IngestError("the source has duplicate column names")
    for name in names:
        if name.lower().startswith(RESERVED_COLUMN_PREFIX):
            raise IngestError(f"column names starting with {RESERVED_COLUMN_PREFIX!r} are reserved")
    wanted = set(opts.drop) | set(opts.generalise)
    if opts.participant_column is not None:
        wanted.add(opts.participant_column)
    missing = sorted(wanted - set(names))
    if missing:
        raise IngestError(f"column(s) not in the source: {', '.join(missing)}")
    if opts.participant_column in opts.drop or opts.participant_column in opts.generalise:
        raise IngestError("the participant column cannot be dropped or generalised")
    for rule in opts.generalise.values():
        if rule not in RULES:
            raise IngestError(f"unknown generalisation rule {rule!r} (known: {', '.join(RULES)})")
    kept = [n for n in names if n not in opts.drop and n != opts.participant_column]
    if opts.participant_column is not None and opts.participant_output in kept:
        raise IngestError(f"output column {opts.participant_output!r} already exists")
    return kept


def _rules(
    opts: IngestOptions, types: Mapping[str, TypeSpec], read: _CsvRead | None
) -> tuple[str, ...]:
    rules: list[str] = []
    if opts.participant_column is not None:
        rules.append(f"pseudonymise:{opts.participant_column}->{opts.participant_output}")
    rules.extend(f"drop:{c}" for c in sorted(opts.drop))
    rules.extend(f"generalise:{c}:{r}" for c, r in sorted(opts.generalise.items()))
    rules.extend(f"type:{c}:{t.name}" for c, t in sorted(types.items()))
    if opts.keep_valid:
        rules.append("keep_valid")
    if read is not None:
        rules.append(f"encoding:{read.encoding}")
        rules.append(f"delimiter:{read.delimiter}")
        if not read.header:
            rules.append("header:none")
    return tuple(rules)


def check_options(opts: IngestOptions) -> None:
    """Refuse (:class:`IngestError`) what can be told wrong before reading any source: unknown
    types, encodings or rules, and options that contradict each other."""
    for name in opts.types.values():
        parse_type(name)
    if opts.encoding != AUTO:
        text_encoding(opts.encoding)
    for rule in opts.generalise.values():
        if rule not in RULES:
            raise IngestError(f"unknown generalisation rule {rule!r} (known: {', '.join(RULES)})")
    if opts.participant_column is not None and opts.participant_column in opts.types:
        raise IngestError("the participant column is always read as text; give it no type")
    if opts.participant_column is None and opts.personal_data and opts.keep_valid:
        raise IngestError("keep_valid needs a participant column")


def ingest(
    source: Source,
    *,
    name: str,
    version: int,
    location: BlobLocation,
    options: IngestOptions,
    pseudonymise: Pseudonymise,
    keys: ParticipantKeys,
    created_by: str,
    now: dt.datetime,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest ``source`` into a new encrypted dataset version at ``location``.

    Returns the report with ``report.version`` set; raises :class:`IngestRejected` (nothing
    stored) when rows were rejected and ``keep_valid`` is off, :class:`IngestError` when the
    source cannot be read or the options do not fit it.
    """
    opts = options
    check_options(opts)
    fmt = _detect_format(source, opts.format)
    types = {column: parse_type(name) for column, name in opts.types.items()}
    prepass = _prepass(source, fmt, opts.encoding)
    sha = prepass.sha256
    read = None
    report = IngestReport(read={"format": fmt})
    if prepass.encoding is not None:
        read = _csv_settings(source, opts, prepass.encoding)
        report.read.update(
            encoding=read.encoding,
            delimiter=read.delimiter,
            header=read.header,
            detected=[
                name
                for name, given in (
                    ("encoding", opts.encoding != AUTO),
                    ("delimiter", opts.delimiter is not None),
                    ("header", opts.header is not None),
                )
                if not given
            ],
        )
    ids = _Identifiers(pseudonymise, keys, opts)
    writer: EncryptedParquetWriter | None = None
    out_schema: pa.Schema | None = None
    kept: list[str] = []
    batches = _rebatch(_batches(source, fmt, opts, read), opts.batch_rows)
    try:
        for raw in batches:
            first_row = report.rows_read
            if out_schema is None:
                kept = _plan_columns(raw.schema, opts)
            batch = _apply_types(raw, types, first_row)
            if out_schema is None:
                out_schema = _output_schema(batch, kept, opts)
            report.rows_read += batch.num_rows
            columns: list[pa.Array] = []
            valid: npt.NDArray[np.bool_] | None = None
            pk: npt.NDArray[np.int64] | None = None
            if opts.participant_column is not None:
                codes, pseudonyms = ids.codes(batch.column(opts.participant_column))
                valid = codes >= 0
                bad = np.flatnonzero(~valid)
                if len(bad):
                    _record(report, ids.reasons, bad, codes, first_row, opts.max_reported)
                if len(bad) and not opts.keep_valid:
                    continue  # keep validating to report every row; nothing will be stored
                pk = codes
            if report.rows_rejected and not opts.keep_valid:
                continue
            for column in kept:
                array = batch.column(column)
                rule = opts.generalise.get(column)
                columns.append(array if rule is None else _generalise(array, rule, column))
            if pk is not None and valid is not None:
                columns.insert(0, pseudonyms)
                columns.append(pa.array(np.where(valid, pk, 0).astype(np.int32), pa.int32()))
            out = pa.RecordBatch.from_arrays(columns, schema=out_schema)
            if valid is not None and not valid.all():
                out = out.filter(pa.array(valid))
            if writer is None:
                writer = EncryptedParquetWriter(
                    location, out_schema, row_group_rows=opts.row_group_rows
                )
            writer.write_batch(out)
            report.rows_loaded += out.num_rows
            if progress is not None:
                progress(report.rows_read)
        if report.rows_rejected and not opts.keep_valid:
            raise IngestRejected(
                f"{report.rows_rejected} of {report.rows_read} rows rejected; nothing was stored",
                report,
            )
        if out_schema is None:
            raise IngestError("the source holds no rows")
        if writer is None:
            writer = EncryptedParquetWriter(location, out_schema)
        stored = writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        report.rows_loaded = 0
        raise
    report.version = DatasetVersion(
        name=name,
        version=version,
        location=location,
        schema=out_schema,
        rows=report.rows_loaded,
        participant_column=opts.participant_output if opts.participant_column else None,
        personal_data=opts.personal_data,
        lineage=Lineage(
            source_name=_source_name(source),
            source_sha256=sha,
            source_format=fmt,
            rules=_rules(opts, types, read),
            created_by=created_by,
            created_at=now,
        ),
        stored=stored,
    )
    return report


def _source_name(source: Source) -> str:
    if isinstance(source, str | Path):
        return Path(source).name
    return Path(str(getattr(source, "name", "stream"))).name


def _output_schema(batch: pa.RecordBatch, kept: list[str], opts: IngestOptions) -> pa.Schema:
    fields: list[pa.Field] = []
    for column in kept:
        rule = opts.generalise.get(column)
        if rule is None:
            fields.append(batch.schema.field(column))
            continue
        sample = _generalise(batch.column(column).slice(0, 0), rule, column)
        fields.append(pa.field(column, sample.type))
    if opts.participant_column is not None:
        fields.insert(0, pa.field(opts.participant_output, pa.string(), nullable=False))
        fields.append(pa.field(PK_COLUMN, pa.int32(), nullable=False))
    return pa.schema(fields)


def _record(
    report: IngestReport,
    reasons: list[str],
    bad: npt.NDArray[np.int64],
    codes: npt.NDArray[np.int64],
    first_row: int,
    max_reported: int,
) -> None:
    report.rows_rejected += len(bad)
    bad_codes = codes[bad]
    for code, count in zip(*np.unique(bad_codes, return_counts=True), strict=True):
        reason = reasons[-1 - int(code)]
        report.reasons[reason] = report.reasons.get(reason, 0) + int(count)
    room = max_reported - len(report.rejections)
    for i, code in zip(bad[:room].tolist(), bad_codes[:room].tolist(), strict=True):
        report.rejections.append(Rejection(row=first_row + i + 1, reason=reasons[-1 - code]))


def write_jsonl(rows: Iterable[Mapping[str, Any]], out: IO[bytes]) -> None:
    """Write rows as JSON Lines (a helper for tests and demos)."""
    for row in rows:
        out.write(json.dumps(row, default=str).encode("utf-8") + b"\n")
