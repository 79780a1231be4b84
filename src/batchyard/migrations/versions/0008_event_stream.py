"""The event stream: event ids are never reused, and one job's events are indexed in order.

On SQLite an INTEGER PRIMARY KEY without AUTOINCREMENT hands out max(id) + 1, so the ids of a
deleted job's events (the newest ones) would be given again, and a client whose cursor had
passed them would miss the new events: the table is rebuilt with AUTOINCREMENT (its rows and
ids kept). PostgreSQL's sequence never reuses an id. Both get an index on (job_id, id): a
job's events in order, for `GET /events?JobId=` and each event's per-job `Seq`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEX = "ix_events_job_order"


def upgrade() -> None:
    bind = op.get_bind()
    indexes = {index["name"] for index in sa.inspect(bind).get_indexes("events")}
    if INDEX in indexes:
        return  # a database made by `metadata.create_all` (see 0001)
    if bind.dialect.name == "sqlite":
        with op.batch_alter_table("events", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True}):
            pass
    op.create_index(INDEX, "events", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="events")
