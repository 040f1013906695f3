"""Initial tables: posts, event_outbox, front_page, poll_log.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "posts",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("subreddit", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("author", sa.Text),
        sa.Column("created_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("permalink", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("domain", sa.Text),
        sa.Column("is_self", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("flair", sa.Text),
        sa.Column("over_18", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("raw", JSONB, nullable=False),
    )
    op.create_index("posts_subreddit_created_idx", "posts", ["subreddit", "created_utc"])
    op.create_index("posts_created_idx", "posts", ["created_utc"])
    op.create_index("posts_first_seen_idx", "posts", ["first_seen_at"])

    op.create_table(
        "event_outbox",
        sa.Column("insert_id", sa.Text, primary_key=True),
        sa.Column("post_id", sa.Text, sa.ForeignKey("posts.id"), nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("response", JSONB),
        sa.UniqueConstraint("post_id", "event_type", name="event_outbox_post_event_key"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'dead')", name="event_outbox_status_check"),
    )
    op.create_index(
        "event_outbox_due_idx", "event_outbox", ["next_attempt_at"], postgresql_where=sa.text("status = 'pending'")
    )
    op.create_index("event_outbox_status_idx", "event_outbox", ["status"])
    op.create_index("event_outbox_sent_at_idx", "event_outbox", ["sent_at"])

    op.create_table(
        "front_page",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("subreddit", sa.Text, nullable=False),
        sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("post_id", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("author", sa.Text),
        sa.Column("permalink", sa.Text, nullable=False),
        sa.Column("flair", sa.Text),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("num_comments", sa.Integer, nullable=False),
        sa.Column("stickied", sa.Boolean, nullable=False),
        sa.Column("over_18", sa.Boolean, nullable=False),
        sa.Column("created_utc", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("front_page_snapshot_idx", "front_page", ["subreddit", "snapshot_at"])

    op.create_table(
        "poll_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("subreddit", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False, server_default="poll"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
        sa.Column("pages", sa.Integer, nullable=False, server_default="0"),
        sa.Column("fetched", sa.Integer, nullable=False, server_default="0"),
        sa.Column("new_posts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reached_known", sa.Boolean),
        sa.Column("gap", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("ratelimit_remaining", sa.Float),
        sa.Column("ratelimit_reset_s", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("run_id", sa.Text),
    )
    op.create_index("poll_log_subreddit_started_idx", "poll_log", ["subreddit", "started_at"])


def downgrade() -> None:
    op.drop_table("poll_log")
    op.drop_table("front_page")
    op.drop_table("event_outbox")
    op.drop_table("posts")
