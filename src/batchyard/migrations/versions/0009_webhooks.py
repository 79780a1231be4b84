"""Webhooks: endpoints, deliveries (the outbox's work), the dispatcher's cursor, secrets.

The cursor starts after the events recorded before this revision (none are sent late).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "webhook_deliveries" in sa.inspect(op.get_bind()).get_table_names():
        return  # a database made by `metadata.create_all` (see 0001)
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_endpoints_address", "webhook_endpoints", ["tenant", "url"],
                    unique=True)
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("event_time", sa.Float(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt", sa.Float(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_webhook_deliveries_once", "webhook_deliveries",
                    ["event_id", "endpoint_id"], unique=True)
    op.create_index("ix_webhook_deliveries_queue", "webhook_deliveries",
                    ["state", "endpoint_id", "event_id"])
    op.create_index("ix_webhook_deliveries_tenant", "webhook_deliveries", ["tenant", "id"])
    op.create_table(
        "webhook_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "webhook_secrets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("retired", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_secrets_tenant", "webhook_secrets", ["tenant"])
    # An installation upgraded with events already recorded starts its outbox after them:
    # the events of before had no webhooks, and are not sent now, days late.
    op.execute("INSERT INTO webhook_cursor (name, event_id) "
               "SELECT 'outbox', COALESCE(MAX(id), 0) FROM events")


def downgrade() -> None:
    for table in ("webhook_secrets", "webhook_cursor", "webhook_deliveries",
                  "webhook_endpoints"):
        op.drop_table(table)
