"""The pipeline's tables (SQLAlchemy Core). Changes go through a migration in migrations/versions."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()

OUTBOX_STATUSES = ("pending", "sent", "dead")

posts = sa.Table(
    "posts",
    metadata,
    # The base36 post id: this primary key is the dedupe guard (DESIGN §3.1).
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
    sa.Index("posts_subreddit_created_idx", "subreddit", "created_utc"),
    sa.Index("posts_created_idx", "created_utc"),
    sa.Index("posts_first_seen_idx", "first_seen_at"),
)

event_outbox = sa.Table(
    "event_outbox",
    metadata,
    # Deterministic per (event type, post id), so every resend carries the same insert_id.
    sa.Column("insert_id", sa.Text, primary_key=True),
    sa.Column("post_id", sa.Text, sa.ForeignKey("posts.id"), nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    # The whole event as it will be sent, frozen at record time (DESIGN §3.2).
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
    sa.CheckConstraint(f"status IN {OUTBOX_STATUSES}", name="event_outbox_status_check"),
    sa.Index(
        "event_outbox_due_idx",
        "next_attempt_at",
        postgresql_where=sa.text("status = 'pending'"),
    ),
    sa.Index("event_outbox_status_idx", "status"),
    sa.Index("event_outbox_sent_at_idx", "sent_at"),
    sa.Index("event_outbox_status_created_idx", "status", "created_at"),
)

front_page = sa.Table(
    "front_page",
    metadata,
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
    sa.Index("front_page_snapshot_idx", "subreddit", "snapshot_at"),
)

poll_log = sa.Table(
    "poll_log",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("subreddit", sa.Text, nullable=False),
    # poll (the scheduled walk), reconcile (deep walk), backfill
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
    sa.Index("poll_log_subreddit_started_idx", "subreddit", "started_at"),
    sa.Index("poll_log_problems_idx", "started_at", postgresql_where=sa.text("gap OR error IS NOT NULL")),
)

incidents = sa.Table(
    "incidents",
    metadata,
    # Failed runs, gaps, dead letters, rejected keys, stale events: one row per incident, not per
    # tick. An open incident (resolved_at IS NULL) is unique per (kind, key).
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
    sa.Index("incidents_open_key", "kind", "key", unique=True, postgresql_where=sa.text("resolved_at IS NULL")),
    sa.Index("incidents_opened_idx", "opened_at"),
)

reddit_rate_limit = sa.Table(
    "reddit_rate_limit",
    metadata,
    # One token bucket per OAuth client id ("public" without OAuth), shared by every process that
    # polls with it (ratelimit.py); the x-ratelimit-* headers last seen are recorded beside it.
    sa.Column("client_key", sa.Text, primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("blocked_until", sa.DateTime(timezone=True)),
    sa.Column("granted", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reported_remaining", sa.Float),
    sa.Column("reported_reset_s", sa.Float),
    sa.Column("reported_at", sa.DateTime(timezone=True)),
)
