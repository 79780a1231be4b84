"""Buckets belong to tenants: the owner of each bucket claimed by a job.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "buckets" in sa.inspect(op.get_bind()).get_table_names():
        return  # a database made by `metadata.create_all` before the migrations (see 0001)
    op.create_table(
        "buckets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_buckets_owner", "buckets", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_buckets_owner", table_name="buckets")
    op.drop_table("buckets")
