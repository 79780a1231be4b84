"""Instances count their lost attempts (re-runs after a lost agent are bounded); tasks count
their instances per state, jobs their tasks (kept with every change: counting costs one row).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


STATES = ("Waiting", "Running", "Finished", "Failed", "Stopped")


def _count_column(state: str) -> str:
    return f"instances_{state.lower()}"


def _task_count_column(state: str) -> str:
    return f"tasks_{state.lower()}"


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("instances")}
    if "lost" in columns:
        return  # a database made by `metadata.create_all` (see 0001)
    with op.batch_alter_table("instances") as table:
        table.add_column(sa.Column("lost", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("tasks") as table:
        for state in STATES:
            table.add_column(sa.Column(_count_column(state), sa.Integer(), nullable=False,
                                       server_default="0"))
    with op.batch_alter_table("jobs") as table:
        for state in STATES:
            table.add_column(sa.Column(_task_count_column(state), sa.Integer(), nullable=False,
                                       server_default="0"))
    for state in STATES:
        op.execute(sa.text(
            f"UPDATE tasks SET {_count_column(state)} = (SELECT count(*) FROM instances "
            "WHERE instances.job_id = tasks.job_id AND instances.task = tasks.name "
            f"AND instances.state = '{state}')"))
        op.execute(sa.text(
            f"UPDATE jobs SET {_task_count_column(state)} = (SELECT count(*) FROM tasks "
            f"WHERE tasks.job_id = jobs.id AND tasks.state = '{state}')"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        for state in STATES:
            table.drop_column(_task_count_column(state))
    with op.batch_alter_table("tasks") as table:
        for state in STATES:
            table.drop_column(_count_column(state))
    with op.batch_alter_table("instances") as table:
        table.drop_column("lost")
