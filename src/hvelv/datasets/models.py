"""Dataset tables: datasets, their immutable versions, and the participant key registry.

* ``datasets``: one named table of a project, with its description, column descriptions, data
  class (what the consent engine is asked about) and the project's "holds personal data" mark;
* ``dataset_versions``: one immutable, encrypted Parquet object each (store, object key and the
  wrapped data key's id), its schema, row count and lineage (source file and SHA-256, rules, who
  and when). Rows are inserted and never changed, except that deleting a version sets
  ``deleted_at``/``deleted_by``/``deletion_reason`` once (its object and data key are destroyed,
  the row stays as lineage for the audit trail);
* ``dataset_participant_keys``: the dense participant key of each pseudonym in the project
  (``0, 1, 2, ...`` in order of first ingest), append-only. Rows of a version carry the key in
  ``_hv_pk``, and consent snapshots become permit masks indexed by it
  (:class:`hvelv.datasets.keys.ParticipantKeys`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hvelv.db.base import Base, UTCDateTime, utcnow

_PROJECT_FK = "projects.pid"


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey(_PROJECT_FK, ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    column_descriptions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    data_class: Mapped[str] = mapped_column(String(40))
    # False only when the project marks it as holding no personal data (e.g. a code list)
    personal_data: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # set when its last live version is deleted; a new ingest under the name revives the row
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    deleted_by: Mapped[str | None] = mapped_column(String(200), default=None)


class DatasetVersionRow(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(ForeignKey(_PROJECT_FK, ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    store: Mapped[str] = mapped_column(String(16))
    storage_key: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[int] = mapped_column(Integer)  # the project's data key (projects.keys)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    plaintext_bytes: Mapped[int] = mapped_column(BigInteger)
    plaintext_sha256: Mapped[str] = mapped_column(String(64))
    arrow_schema: Mapped[bytes] = mapped_column(LargeBinary)  # pyarrow IPC-serialised schema
    columns: Mapped[list[dict[str, str]]] = mapped_column(JSON)  # [{name, type}] as shown
    rows: Mapped[int] = mapped_column(BigInteger)
    rows_rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    participant_column: Mapped[str | None] = mapped_column(String(63))
    source_file_id: Mapped[str | None] = mapped_column(String(32))
    source_area: Mapped[str | None] = mapped_column(String(16))
    source_path: Mapped[str | None] = mapped_column(String(1024))
    source_sha256: Mapped[str] = mapped_column(String(64))
    source_format: Mapped[str] = mapped_column(String(16))
    rules: Mapped[list[str]] = mapped_column(JSON)
    rejections: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # reason -> count
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    deleted_by: Mapped[str | None] = mapped_column(String(200), default=None)
    deletion_reason: Mapped[str | None] = mapped_column(String(1000), default=None)


class ParticipantKeyRow(Base):
    __tablename__ = "dataset_participant_keys"
    __table_args__ = (UniqueConstraint("project_id", "pseudonym"),)

    project_id: Mapped[str] = mapped_column(
        ForeignKey(_PROJECT_FK, ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    pseudonym: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
