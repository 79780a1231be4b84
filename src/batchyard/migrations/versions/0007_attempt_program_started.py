"""Each attempt records when its program started, after staging (the console's phases).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("attempts")}
    if "program_started" in columns:
        return  # a database made by `metadata.create_all` (see 0001)
    with op.batch_alter_table("attempts") as table:
        table.add_column(sa.Column("program_started", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as table:
        table.drop_column("program_started")
