"""Incidents: failed runs, gaps, dead letters and other alerts, one row per incident.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("notified_at", sa.DateTime(timezone=True)),
        sa.Column("notify_error", sa.Text),
    )
    op.create_index(
        "incidents_open_key", "incidents", ["kind", "key"], unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_index("incidents_opened_idx", "incidents", ["opened_at"])


def downgrade() -> None:
    op.drop_table("incidents")
