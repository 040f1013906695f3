"""Indexes the dashboard's health queries need to stay fast with millions of posts.

event_outbox(status, created_at): the oldest pending event and the newest dead letters are one
index probe each, even when Amplitude is not configured and every event is pending.
poll_log(started_at) for problem polls only: recent gaps and failed polls without scanning the
whole poll history (problems are rare, so the partial index is tiny).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("event_outbox_status_created_idx", "event_outbox", ["status", "created_at"])
    op.create_index(
        "poll_log_problems_idx", "poll_log", ["started_at"],
        postgresql_where=sa.text("gap OR error IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("poll_log_problems_idx", table_name="poll_log")
    op.drop_index("event_outbox_status_created_idx", table_name="event_outbox")
