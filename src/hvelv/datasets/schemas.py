"""Request and response bodies of the datasets API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hvelv.text import Line, RequestBody, Text

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
DatasetName = Annotated[str, Field(pattern=NAME_PATTERN)]
ColumnName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Rule = Literal["year", "year_month", "postcode2", "age_band5"]
TypeName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=80,
        pattern=r"^[a-z0-9_]+(\([^\x00-\x1f\x7f]*\))?$",
        description="string, int16, int32, int64, float32, float64, bool, date, timestamp, "
        "timestamp_utc, decimal(p,s), date(FORMAT) or timestamp(FORMAT) (strptime, e.g. %d.%m.%Y)",
    ),
]
Encoding = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]{1,20}$",
        description="auto (a byte order mark, else UTF-8 when the file is valid UTF-8, "
        "otherwise Windows-1252), or a text encoding such as utf8, cp1252, latin-1, utf-16",
    ),
]
DataClass = Literal[
    "questionnaire", "registry", "biobank_sample", "genome", "clinical", "imaging", "wearable"
]


class Strict(RequestBody):
    """A request body (unknown fields and booleans for numbers refused)."""


class SourceIn(Strict):
    area: Literal["import", "files"] = "import"
    path: Annotated[Line, Field(min_length=1, max_length=1024)]


class DatasetCreate(Strict):
    """A new version of dataset ``name`` (the dataset is created on its first version)."""

    name: DatasetName
    source: SourceIn
    description: Text | None = Field(default=None, max_length=4000)
    column_descriptions: dict[ColumnName, Annotated[Text, Field(max_length=1000)]] | None = Field(
        default=None, max_length=1000
    )
    data_class: DataClass = Field(
        default="questionnaire", description="What the consent engine is asked about"
    )
    participant_column: ColumnName | None = Field(
        default=None, description="The column holding national identity numbers"
    )
    participant_output: DatasetName = "participant"
    personal_data: bool = Field(
        default=True,
        description="false: the project marks the dataset as holding no personal data "
        "(only then can a dataset without a participant column be queried)",
    )
    format: Literal["csv", "parquet", "jsonl"] | None = None
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] | None = Field(
        default=None, description="CSV delimiter; default: detected (, ; tab |)"
    )
    header: bool | None = Field(
        default=None, description="Whether a CSV's first line names the columns; default: detected"
    )
    encoding: Encoding = "auto"
    types: dict[ColumnName, TypeName] = Field(
        default_factory=dict,
        max_length=500,
        description='Override inferred column types, e.g. {"postcode": "string"}',
    )
    drop: list[ColumnName] = Field(default_factory=list, max_length=500)
    generalise: dict[ColumnName, Rule] = Field(default_factory=dict, max_length=500)
    keep_valid: bool = Field(
        default=False, description="Store the valid rows and report the rejected ones"
    )


class DatasetPatch(Strict):
    description: Text | None = Field(default=None, max_length=4000)
    column_descriptions: dict[ColumnName, Annotated[Text, Field(max_length=1000)]] | None = Field(
        default=None, max_length=1000
    )
    data_class: DataClass | None = None
    personal_data: bool | None = None


class ColumnOut(BaseModel):
    name: str
    type: str
    description: str | None = None


class LineageOut(BaseModel):
    source_file_id: str | None
    source_area: str | None
    source_path: str | None
    source_sha256: str
    source_format: str
    rules: list[str]
    created_by: str
    created_at: datetime


class VersionOut(BaseModel):
    dataset: str
    version: int
    rows: int
    rows_rejected: int
    rejections: dict[str, int]
    participant_column: str | None
    columns: list[ColumnOut]
    stored_bytes: int
    lineage: LineageOut
    deleted_at: datetime | None = None
    deleted_by: str | None = None
    deletion_reason: str | None = None


class RejectionOut(BaseModel):
    row: int
    reason: str


class UploadQuery(BaseModel):
    """The options of a streamed upload (``POST .../datasets/{name}/upload``), as query
    parameters: those of ``POST .../datasets`` without ``name`` and ``source``, with the
    mappings as repeated ``COLUMN=VALUE`` parameters, and the body's file name."""

    model_config = ConfigDict(extra="forbid")

    filename: Annotated[Line, Field(min_length=1, max_length=255)] | None = Field(
        default=None, description="The file's name (lineage; format by suffix)"
    )
    format: Literal["csv", "parquet", "jsonl"] | None = Field(
        default=None, description="Default: by the file name's suffix, else by Content-Type"
    )
    participant_column: ColumnName | None = None
    participant_output: DatasetName = "participant"
    data_class: DataClass = "questionnaire"
    personal_data: bool = True
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] | None = None
    header: bool | None = None
    encoding: Encoding = "auto"
    drop: list[ColumnName] = Field(default_factory=list, max_length=500)
    generalise: list[Annotated[str, Field(max_length=300)]] = Field(
        default_factory=list, max_length=500, description="COLUMN=RULE; repeatable"
    )
    types: list[Annotated[str, Field(max_length=300)]] = Field(
        default_factory=list, max_length=500, description="COLUMN=TYPE; repeatable"
    )
    keep_valid: bool = False
    description: Text | None = Field(default=None, max_length=4000)
    column_descriptions: list[Annotated[Text, Field(max_length=1300)]] = Field(
        default_factory=list, max_length=1000, description="COLUMN=TEXT; repeatable"
    )


class ReadOut(BaseModel):
    """How the source was read; ``detected`` names what was detected rather than given."""

    format: str
    encoding: str | None = None
    delimiter: str | None = None
    header: bool | None = None
    detected: list[str] = Field(default_factory=list)


class IngestOut(BaseModel):
    version: VersionOut
    read: ReadOut
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    reasons: dict[str, int]
    rejections: list[RejectionOut]
    rejections_truncated: bool


class DatasetOut(BaseModel):
    name: str
    description: str
    column_descriptions: dict[str, str]
    data_class: str
    personal_data: bool
    queryable: bool
    created_at: datetime
    updated_at: datetime
    current_version: int | None
    rows: int | None
    versions: list[VersionOut] | None = None


class DeletionOut(BaseModel):
    dataset: str
    deleted_versions: list[int]
    current_version: int | None = Field(
        description="The dataset's current version now; null: the dataset is gone, its name free"
    )


class QueryIn(Strict):
    sql: Annotated[Text, Field(min_length=1, max_length=100_000)]
    purpose: Annotated[str, Field(min_length=2, max_length=16, pattern=r"^[A-Z0-9:]+$")] = Field(
        description="One of the project's approved purposes: DUO id or code, e.g. DUO:0000006"
    )
    disease: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9:_]+$")] | None = None
    action: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z_]+$")] = "analyse"
    requester_institution: Annotated[Line, Field(max_length=200)] = ""
    format: Literal["json", "csv", "parquet", "arrow"] = "json"
    limit: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        default=None,
        description="Rows per JSON page: at most the instance's HVELV_QUERY_PAGE_MAX_ROWS "
        "(10,000 by default); default 1000 or that maximum if lower",
    )
    page: Annotated[int, Field(ge=1, le=1_000_000)] = 1


class QueryOut(BaseModel):
    columns: list[ColumnOut]
    rows: list[list[Any]]
    total_rows: int
    page: int
    limit: int
    next_page: int | None
    datasets: list[str]
    ledger_position: int
    permitted_participants: int
    log_ids: list[int]
    elapsed_ms: float
