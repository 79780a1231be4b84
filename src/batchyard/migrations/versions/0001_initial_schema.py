"""Initial schema: jobs, tasks, instances, attempts, events, access keys, idempotency tokens.

Databases made before the migrations (by `metadata.create_all`) already hold some of these
tables with this very layout: those are kept as they are, only the missing ones are created.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIMES = ("started", "ended")


def _times() -> list[sa.Column[float]]:
    return [sa.Column(name, sa.Float(), nullable=True) for name in TIMES]


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    creators = {"jobs": _create_jobs, "tasks": _create_tasks, "instances": _create_instances,
                "attempts": _create_attempts, "events": _create_events,
                "access_keys": _create_access_keys,
                "idempotency_tokens": _create_idempotency_tokens}
    for table, create in creators.items():
        if table not in existing:
            create()


def _create_jobs() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("fail_on_instance_fail", sa.Boolean(), nullable=False),
        sa.Column("auto_release", sa.Boolean(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        *_times(),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("created", "state", "tenant"):
        op.create_index(f"ix_jobs_{column}", "jobs", [column])


def _create_tasks() -> None:
    op.create_table(
        "tasks",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("max_retry_count", sa.Integer(), nullable=False),
        *_times(),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "name"),
    )


def _create_instances() -> None:
    op.create_table(
        "instances",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        *_times(),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("stdout_path", sa.Text(), nullable=False),
        sa.Column("stderr_path", sa.Text(), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["job_id", "task"], ["tasks.job_id", "tasks.name"],
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "task", "instance_id"),
    )
    op.create_index("ix_instances_state", "instances", ["state", "job_id", "task", "instance_id"])


def _create_attempts() -> None:
    op.create_table(
        "attempts",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("attempt", sa.Integer(), autoincrement=False, nullable=False),
        *_times(),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("stdout_path", sa.Text(), nullable=False),
        sa.Column("stderr_path", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "task", "instance_id", "attempt"),
    )


def _create_events() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_events_job_id", "events", ["job_id"])


def _create_access_keys() -> None:
    op.create_table(
        "access_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("revoked", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_access_keys_tenant", "access_keys", ["tenant"])


def _create_idempotency_tokens() -> None:
    op.create_table(
        "idempotency_tokens",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "kind", "token"),
    )
    op.create_index("ix_idempotency_tokens_created", "idempotency_tokens", ["created"])


def downgrade() -> None:
    for table in ("instances", "tasks", "attempts", "jobs", "events", "access_keys",
                  "idempotency_tokens"):
        op.drop_table(table)
