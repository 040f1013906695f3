"""The shared Reddit request budget: one token-bucket row per OAuth client id (ratelimit.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reddit_rate_limit",
        sa.Column("client_key", sa.Text, primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("blocked_until", sa.DateTime(timezone=True)),
        sa.Column("granted", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reported_remaining", sa.Float),
        sa.Column("reported_reset_s", sa.Float),
        sa.Column("reported_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("reddit_rate_limit")
