"""Clusters and their VMs (reference §7), and the cluster each task runs on
(`tasks.cluster_id`, "" for none: a cluster's waiting instances and active jobs are found
through its index).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    if "clusters" not in tables:
        _create_clusters()
    if "vms" not in tables:
        _create_vms()
    if "cluster_id" not in {column["name"] for column in inspector.get_columns("tasks")}:
        with op.batch_alter_table("tasks") as table:
            table.add_column(sa.Column("cluster_id", sa.String(length=40), nullable=False,
                                       server_default=""))
            table.create_index("ix_tasks_cluster_id", ["cluster_id"])
        _fill_cluster_ids()


def _create_clusters() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("operation_logs", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_clusters_tenant", "clusters", ["tenant"])


def _create_vms() -> None:
    op.create_table(
        "vms",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("cluster_id", sa.String(length=40), nullable=False),
        sa.Column("group_name", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("instance_type", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=False),
        sa.Column("host_name", sa.String(length=255), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_vms_cluster", "vms", ["cluster_id", "group_name", "state"])


def _fill_cluster_ids() -> None:
    """Each existing task's ClusterId, from its job's description (JSON)."""
    import json

    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT job_id, description FROM job_descriptions"))
    updates = []
    for job_id, description in rows:
        tasks = (json.loads(description).get("DAG") or {}).get("Tasks") or {}
        updates += [{"b_job": job_id, "b_task": name, "b_cluster": task.get("ClusterId")}
                    for name, task in tasks.items()
                    if isinstance(task, dict) and isinstance(task.get("ClusterId"), str)
                    and task.get("ClusterId")]
    if updates:
        connection.execute(sa.text("UPDATE tasks SET cluster_id = :b_cluster "
                                   "WHERE job_id = :b_job AND name = :b_task"), updates)


def downgrade() -> None:
    with op.batch_alter_table("tasks") as table:
        table.drop_index("ix_tasks_cluster_id")
        table.drop_column("cluster_id")
    op.drop_index("ix_vms_cluster", table_name="vms")
    op.drop_table("vms")
    op.drop_index("ix_clusters_tenant", table_name="clusters")
    op.drop_table("clusters")
