"""Each attempt records the VM it ran on (a cluster VM, or a VM of its task's AutoCluster).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("attempts")}
    if "worker" in columns:
        return  # a database made by `metadata.create_all` (see 0001)
    with op.batch_alter_table("attempts") as table:
        table.add_column(sa.Column("worker", sa.String(40), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as table:
        table.drop_column("worker")
