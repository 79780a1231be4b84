"""Signature nonces: replays are refused across server restarts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "signature_nonces" in sa.inspect(op.get_bind()).get_table_names():
        return  # a database made by `metadata.create_all` before the migrations (see 0001)
    op.create_table(
        "signature_nonces",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=40), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "digest"),
    )
    op.create_index("ix_signature_nonces_expires", "signature_nonces", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_signature_nonces_expires", table_name="signature_nonces")
    op.drop_table("signature_nonces")
