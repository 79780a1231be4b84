"""Instances count their lost attempts (re-runs after a lost agent are bounded); tasks count
their instances per state, jobs their tasks (kept with every change: counting costs one row);
job descriptions move to a table of their own (the job row changes often, they never).

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
    _move_descriptions_out()
    for state in STATES:
        op.execute(sa.text(
            f"UPDATE tasks SET {_count_column(state)} = (SELECT count(*) FROM instances "
            "WHERE instances.job_id = tasks.job_id AND instances.task = tasks.name "
            f"AND instances.state = '{state}')"))
        op.execute(sa.text(
            f"UPDATE jobs SET {_task_count_column(state)} = (SELECT count(*) FROM tasks "
            f"WHERE tasks.job_id = jobs.id AND tasks.state = '{state}')"))


def _move_descriptions_out() -> None:
    op.create_table(
        "job_descriptions",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.execute(sa.text("INSERT INTO job_descriptions (job_id, description) "
                       "SELECT id, description FROM jobs"))
    with op.batch_alter_table("jobs") as table:
        table.drop_column("description")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.add_column(sa.Column("description", sa.Text(), nullable=False,
                                   server_default="{}"))
    op.execute(sa.text("UPDATE jobs SET description = (SELECT description FROM "
                       "job_descriptions WHERE job_descriptions.job_id = jobs.id)"))
    op.drop_table("job_descriptions")
    with op.batch_alter_table("jobs") as table:
        for state in STATES:
            table.drop_column(_task_count_column(state))
    with op.batch_alter_table("tasks") as table:
        for state in STATES:
            table.drop_column(_count_column(state))
    with op.batch_alter_table("instances") as table:
        table.drop_column("lost")
