"""Migrations on an empty database of the selected backend (SQLite, or PostgreSQL with
HVELV_TEST_DATABASE_URL): the models match the migrated schema, and 0006_dataset_deletion goes
up and down with data in place."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url

from hvelv.db import migrate
from hvelv.db.models import Base


@pytest.fixture
def engine(tmp_path: Path, postgres_url: str | None) -> Iterator[Engine]:
    """A new, empty database (not the session's shared test database)."""
    if postgres_url is None:
        eng = create_engine(f"sqlite:///{tmp_path / 'migrations.db'}")
        yield eng
        eng.dispose()
        return
    url = make_url(postgres_url)
    name = f"hvelv_migrations_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    eng = create_engine(url.set(database=name))
    yield eng
    eng.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def downgrade(engine: Engine, revision: str) -> None:
    cfg = migrate.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def _dummy(column: sa.Column[Any]) -> Any:
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return True
    if isinstance(kind, sa.Integer):
        return 1
    if isinstance(kind, sa.DateTime):
        return dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    if isinstance(kind, sa.Date):
        return dt.date(2026, 1, 2)
    if isinstance(kind, sa.JSON):
        return []
    if isinstance(kind, sa.LargeBinary):
        return b"x"
    return "x"


def insert(conn: Connection, table: str, **values: Any) -> Any:
    """Insert a row into the table as it is now (reflected), filling required columns."""
    t = sa.Table(table, sa.MetaData(), autoload_with=conn)
    row = dict(values)
    for column in t.columns:
        if column.name in row or column.nullable or column.server_default is not None:
            continue
        if column.primary_key and isinstance(column.type, sa.Integer) and len(t.primary_key) == 1:
            continue
        row[column.name] = _dummy(column)
    result = conn.execute(t.insert().values(**row))
    return result.inserted_primary_key[0] if result.inserted_primary_key else None


def columns(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def test_the_models_match_the_migrated_schema(engine: Engine) -> None:
    migrate.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_dataset_deletion_up_and_down_with_data(engine: Engine) -> None:
    migrate.upgrade(engine, "0005_upload_defer_length")
    with engine.begin() as conn:
        insert(conn, "users", id=1, username="u1")
        insert(conn, "projects", pid="p1001", number=1001, created_by=1, purposes=[])
        kept = insert(conn, "datasets", project_id="p1001", name="kept", column_descriptions={})
        gone = insert(conn, "datasets", project_id="p1001", name="gone", column_descriptions={})
        for dataset, version in ((kept, 1), (kept, 2), (kept, 3), (gone, 1)):
            insert(
                conn,
                "dataset_versions",
                dataset_id=dataset,
                project_id="p1001",
                version=version,
                storage_key=f"p1001/datasets/{dataset}-{version}",
                columns=[],
                rules=[],
                rejections={},
            )
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    with engine.begin() as conn:
        assert {"deleted_at", "deleted_by", "deletion_reason"} <= columns(conn, "dataset_versions")
        assert {"deleted_at", "deleted_by"} <= columns(conn, "datasets")
        assert (
            conn.execute(
                text("SELECT count(*) FROM dataset_versions WHERE deleted_at IS NULL")
            ).scalar_one()
            == 4
        )
        now = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
        conn.execute(
            text(
                "UPDATE dataset_versions SET deleted_at = :now, deleted_by = 'user:dm', "
                "deletion_reason = 'why' WHERE (dataset_id = :kept AND version = 2) "
                "OR dataset_id = :gone"
            ),
            {"now": now, "kept": kept, "gone": gone},
        )
        conn.execute(
            text("UPDATE datasets SET deleted_at = :now WHERE id = :gone"),
            {"now": now, "gone": gone},
        )

    downgrade(engine, "0005_upload_defer_length")
    with engine.connect() as conn:
        assert "deleted_at" not in columns(conn, "dataset_versions")
        assert "deletion_reason" not in columns(conn, "dataset_versions")
        assert "deleted_at" not in columns(conn, "datasets")
        left = conn.execute(
            text("SELECT dataset_id, version FROM dataset_versions ORDER BY version")
        ).all()
        assert [tuple(r) for r in left] == [(kept, 1), (kept, 3)]  # deleted ones cannot return
        names = conn.execute(text("SELECT name FROM datasets")).scalars().all()
        assert names == ["kept"]

    migrate.upgrade(engine)  # and up again
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM dataset_versions WHERE deleted_at IS NULL")
            ).scalar_one()
            == 2
        )
    assert migrate.is_current(engine)
