"""uploads: tus creation-defer-length. ``length`` is NULL until the client declares it,
and ``reserved`` holds the bytes a deferred upload counts against quotas meanwhile.

Revision ID: 0005_upload_defer_length
Revises: 0004_datasets
Create Date: 2026-12-05 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_upload_defer_length"
down_revision = "0004_datasets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.alter_column("length", existing_type=sa.BigInteger(), nullable=True)
        batch.add_column(sa.Column("reserved", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    # an upload whose length is still unknown cannot be represented without the column
    op.execute("DELETE FROM uploads WHERE length IS NULL")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("reserved")
        batch.alter_column("length", existing_type=sa.BigInteger(), nullable=False)
