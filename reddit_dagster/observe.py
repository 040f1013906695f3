"""Read-only queries behind the Dagster layer's checks, sensors and materialization metadata."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster.events import EVENT_TYPE
from reddit_dagster.schema import event_outbox, front_page, incidents, poll_log, posts

SAMPLE = 10


def _utc_day() -> sa.ColumnElement[Any]:
    """The post's UTC creation date, the key of its daily partition."""
    return sa.func.date(sa.func.timezone("UTC", posts.c.created_utc))


def posts_per_day(engine: Engine, first: date, last: date, *, post_ids: Sequence[str] | None = None) -> dict[str, int]:
    """Recorded posts per UTC creation day in [first, last] ('YYYY-MM-DD' -> count), optionally
    only among post_ids. Days without posts are absent."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    day = _utc_day().label("day")
    stmt = (
        sa.select(day, sa.func.count())
        .where(posts.c.created_utc >= start, posts.c.created_utc < end)
        .group_by(day)
    )
    if post_ids is not None:
        if not post_ids:
            return {}
        stmt = stmt.where(posts.c.id.in_(list(post_ids)))
    with engine.connect() as conn:
        return {row.day.isoformat(): row[1] for row in conn.execute(stmt)}


def days_of_posts(engine: Engine, post_ids: Iterable[str]) -> dict[str, int]:
    """For these recorded posts: UTC creation day -> how many of them."""
    ids = list(post_ids)
    if not ids:
        return {}
    day = _utc_day().label("day")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(day, sa.func.count()).where(posts.c.id.in_(ids)).group_by(day))
        return {row.day.isoformat(): row[1] for row in rows}


def posts_without_outbox(engine: Engine) -> tuple[int, list[str]]:
    """Recorded posts that have no outbox row for their event (count, sample of ids)."""
    missing = (
        sa.select(posts.c.id)
        .outerjoin(
            event_outbox,
            sa.and_(event_outbox.c.post_id == posts.c.id, event_outbox.c.event_type == EVENT_TYPE),
        )
        .where(event_outbox.c.insert_id.is_(None))
    )
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(missing.subquery())).scalar_one()
        sample = list(conn.scalars(missing.order_by(posts.c.id).limit(SAMPLE)))
    return count, sample


def dead_letters(engine: Engine) -> tuple[int, list[dict[str, Any]]]:
    """Outbox rows that will never be sent without an operator (count, sample with reasons)."""
    dead = event_outbox.c.status == "dead"
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).where(dead)).scalar_one()
        rows = conn.execute(
            sa.select(event_outbox.c.post_id, event_outbox.c.last_error)
            .where(dead)
            .order_by(event_outbox.c.created_at.desc())
            .limit(SAMPLE)
        ).mappings()
        sample = [{"post_id": row["post_id"], "reason": (row["last_error"] or "")[:200]} for row in rows]
    return count, sample


def due_outbox_rows(engine: Engine) -> int:
    """Pending rows whose next attempt is due now (what an emission run would claim)."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(
                event_outbox.c.status == "pending",
                event_outbox.c.next_attempt_at <= sa.func.now(),
                sa.or_(event_outbox.c.lease_expires_at.is_(None), event_outbox.c.lease_expires_at <= sa.func.now()),
            )
        ).scalar_one()


def pending_ages(engine: Engine, older_than_s: float) -> tuple[int, float | None]:
    """(pending rows older than older_than_s seconds, age of the oldest pending row in seconds)."""
    age = sa.func.extract("epoch", sa.func.now() - event_outbox.c.created_at)
    pending = event_outbox.c.status == "pending"
    with engine.connect() as conn:
        oldest = conn.execute(sa.select(sa.func.max(age)).where(pending)).scalar_one()
        over = conn.execute(sa.select(sa.func.count()).where(pending, age > older_than_s)).scalar_one()
    return over, float(oldest) if oldest is not None else None


def last_walks(engine: Engine, subreddits: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """The latest poll_log row of each subreddit (any kind of walk), None if it never walked."""
    result: dict[str, dict[str, Any] | None] = {}
    with engine.connect() as conn:
        for subreddit in subreddits:
            row = conn.execute(
                sa.select(poll_log).where(poll_log.c.subreddit == subreddit).order_by(poll_log.c.id.desc()).limit(1)
            ).mappings().first()
            result[subreddit] = dict(row) if row is not None else None
    return result


def walks_of_run(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    """The poll_log rows a run wrote."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(poll_log).where(poll_log.c.run_id == run_id).order_by(poll_log.c.id))
        return [dict(row) for row in rows.mappings()]


def front_page_ages(engine: Engine, subreddits: Sequence[str]) -> dict[str, float | None]:
    """Seconds since each subreddit's newest front-page snapshot (None: never snapshotted)."""
    age = sa.func.extract("epoch", sa.func.now() - sa.func.max(front_page.c.snapshot_at))
    with engine.connect() as conn:
        found = dict(
            conn.execute(
                sa.select(front_page.c.subreddit, age)
                .where(front_page.c.subreddit.in_(list(subreddits)))
                .group_by(front_page.c.subreddit)
            ).all()
        )
    return {subreddit: float(found[subreddit]) if subreddit in found else None for subreddit in subreddits}


def incident_open(engine: Engine, kind: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.exists().where(incidents.c.kind == kind, incidents.c.resolved_at.is_(None)))
        ).scalar() is True
