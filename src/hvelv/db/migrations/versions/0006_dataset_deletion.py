"""dataset deletion: when, by whom and why a dataset version was deleted (the row stays as
lineage), and when a dataset lost its last version.

Revision ID: 0006_dataset_deletion
Revises: 0005_upload_defer_length
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hvelv.db.base


revision = "0006_dataset_deletion"
down_revision = "0005_upload_defer_length"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ALTER TABLE ADD/DROP COLUMN (SQLite >= 3.35 has both): no batch table copy, which on
    # SQLite with foreign keys on would cascade the copy's DROP TABLE to dataset_versions
    for table in ("dataset_versions", "datasets"):
        op.add_column(
            table, sa.Column("deleted_at", hvelv.db.base.UTCDateTime(timezone=True), nullable=True)
        )
        op.add_column(table, sa.Column("deleted_by", sa.String(length=200), nullable=True))
    op.add_column(
        "dataset_versions", sa.Column("deletion_reason", sa.String(length=1000), nullable=True)
    )


def downgrade() -> None:
    # Deleted versions have no object and no data key any more: they cannot become live versions
    # again, so the downgrade removes their rows (and datasets left without versions); the
    # dataset.delete audit events stay in the ledger.
    op.execute("DELETE FROM dataset_versions WHERE deleted_at IS NOT NULL")
    op.execute(
        "DELETE FROM datasets WHERE NOT EXISTS "
        "(SELECT 1 FROM dataset_versions v WHERE v.dataset_id = datasets.id)"
    )
    op.drop_column("dataset_versions", "deletion_reason")
    for table in ("datasets", "dataset_versions"):
        op.drop_column(table, "deleted_by")
        op.drop_column(table, "deleted_at")
