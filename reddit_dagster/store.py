"""Reads and writes of the pipeline's tables that several modules share.

The record path is the heart of the exactly-once argument (DESIGN §3.1): one transaction inserts
the posts with ON CONFLICT (id) DO NOTHING RETURNING id, and outbox rows for exactly the returned
ids. Two processes racing on one post: the primary key lets one win, the loser gets nothing back
and writes no outbox row. There is no SELECT-then-INSERT and no in-memory seen-set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine

from reddit_dagster.events import EVENT_TYPE, SCHEMA_VERSION, build_event
from reddit_dagster.posts import Post
from reddit_dagster.schema import event_outbox, front_page, incidents, poll_log, posts


def _post_row(post: Post) -> dict[str, Any]:
    return {
        "id": post.id,
        "subreddit": post.subreddit,
        "title": post.title,
        "author": post.author,
        "created_utc": post.created_at,
        "permalink": post.permalink,
        "url": post.url,
        "domain": post.domain,
        "is_self": post.is_self,
        "flair": post.flair,
        "over_18": post.over_18,
        "raw": post.raw,
    }


def _outbox_row(post: Post) -> dict[str, Any]:
    event = build_event(post)
    return {
        "insert_id": event["insert_id"],
        "post_id": post.id,
        "event_type": EVENT_TYPE,
        "schema_version": SCHEMA_VERSION,
        "payload": event,
    }


def record_new_posts(engine: Engine, new_or_known: Iterable[Post]) -> list[str]:
    """Record the posts never seen before, each with its outbox row, atomically.

    Returns the ids this call inserted (sorted). Safe against any number of concurrent callers.
    """
    by_id = {post.id: post for post in new_or_known}
    if not by_id:
        return []
    # Rows go in id order so concurrent transactions take the unique-index locks in one order
    # and cannot deadlock on overlapping sets.
    ordered = [by_id[post_id] for post_id in sorted(by_id)]
    with engine.begin() as conn:
        inserted = conn.execute(
            pg_insert(posts).on_conflict_do_nothing(index_elements=[posts.c.id]).returning(posts.c.id),
            [_post_row(post) for post in ordered],
        )
        new_ids = sorted(row.id for row in inserted)
        if new_ids:
            conn.execute(sa.insert(event_outbox), [_outbox_row(by_id[post_id]) for post_id in new_ids])
    return new_ids


def known_post_ids(conn: Connection | Engine, post_ids: Sequence[str]) -> set[str]:
    """Which of these ids are recorded already. Used only to decide how far a walk goes,
    never to decide whether to insert (the primary key decides that)."""
    if not post_ids:
        return set()
    stmt = sa.select(posts.c.id).where(posts.c.id.in_(list(post_ids)))
    if isinstance(conn, Engine):
        with conn.connect() as c:
            return set(c.scalars(stmt))
    return set(conn.scalars(stmt))


def has_any_post(engine: Engine, subreddit: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.exists().where(posts.c.subreddit == subreddit))).scalar() is True


def save_front_page(engine: Engine, subreddit: str, ranked: Sequence[Post], snapshot_at: datetime) -> int:
    """Store one snapshot of the hot listing, rank 1 first. Returns the number of rows."""
    rows = [
        {
            "subreddit": subreddit,
            "snapshot_at": snapshot_at,
            "rank": rank,
            "post_id": post.id,
            "title": post.title,
            "author": post.author,
            "permalink": post.permalink,
            "flair": post.flair,
            "score": post.score,
            "num_comments": post.num_comments,
            "stickied": post.stickied,
            "over_18": post.over_18,
            "created_utc": post.created_at,
        }
        for rank, post in enumerate(ranked, start=1)
    ]
    if rows:
        with engine.begin() as conn:
            conn.execute(sa.insert(front_page), rows)
    return len(rows)


@dataclass
class PollRecord:
    subreddit: str
    started_at: datetime
    kind: str = "poll"
    finished_at: datetime | None = None
    requests: int = 0
    pages: int = 0
    fetched: int = 0
    new_posts: int = 0
    reached_known: bool | None = None
    gap: bool = False
    ratelimit_remaining: float | None = None
    ratelimit_reset_s: float | None = None
    error: str | None = None
    run_id: str | None = None


def write_poll_log(engine: Engine, record: PollRecord) -> int:
    values = dict(record.__dict__)
    values["finished_at"] = values["finished_at"] or datetime.now(UTC)
    with engine.begin() as conn:
        return conn.execute(sa.insert(poll_log).values(values).returning(poll_log.c.id)).scalar_one()


def pipeline_status(engine: Engine) -> dict[str, Any]:
    """Counts for `reddit-dagster status`, the checks and the dashboard."""
    with engine.connect() as conn:
        total_posts = conn.execute(sa.select(sa.func.count()).select_from(posts)).scalar_one()
        by_status = dict(
            conn.execute(sa.select(event_outbox.c.status, sa.func.count()).group_by(event_outbox.c.status)).all()
        )
        oldest_pending = conn.execute(
            sa.select(sa.func.min(event_outbox.c.created_at)).where(event_outbox.c.status == "pending")
        ).scalar_one()
        last = conn.execute(sa.select(poll_log).order_by(poll_log.c.id.desc()).limit(1)).mappings().first()
        now = conn.execute(sa.select(sa.func.now())).scalar_one()
    last_poll = None
    if last is not None:
        last_poll = {
            "subreddit": last["subreddit"],
            "kind": last["kind"],
            "started_at": last["started_at"].isoformat(),
            "finished_at": last["finished_at"].isoformat() if last["finished_at"] else None,
            "new_posts": last["new_posts"],
            "pages": last["pages"],
            "requests": last["requests"],
            "reached_known": last["reached_known"],
            "gap": last["gap"],
            "ok": last["error"] is None and not last["gap"],
            "error": last["error"],
        }
    return {
        "posts": total_posts,
        "pending": by_status.get("pending", 0),
        "sent": by_status.get("sent", 0),
        "dead": by_status.get("dead", 0),
        "oldest_pending_age_s": round((now - oldest_pending).total_seconds(), 1) if oldest_pending else None,
        "last_poll": last_poll,
    }


def open_incident(engine: Engine, kind: str, key: str, message: str, run_id: str | None = None) -> bool:
    """Record an incident once: True if it is new, False if the same (kind, key) is already open
    (then only last_seen_at moves). Alerting keys off the True, so it fires once per incident."""
    stmt = (
        pg_insert(incidents)
        .values(kind=kind, key=key, message=message[:2000], run_id=run_id)
        .on_conflict_do_nothing(index_elements=[incidents.c.kind, incidents.c.key],
                                index_where=incidents.c.resolved_at.is_(None))
        .returning(incidents.c.id)
    )
    with engine.begin() as conn:
        created = conn.execute(stmt).first() is not None
        if not created:
            conn.execute(
                sa.update(incidents)
                .where(incidents.c.kind == kind, incidents.c.key == key, incidents.c.resolved_at.is_(None))
                .values(last_seen_at=sa.func.now(), message=message[:2000])
            )
    return created


def resolve_incidents(engine: Engine, kind: str, key: str | None = None) -> int:
    """Close the open incidents of a kind (and key); returns how many were closed."""
    stmt = sa.update(incidents).where(incidents.c.kind == kind, incidents.c.resolved_at.is_(None))
    if key is not None:
        stmt = stmt.where(incidents.c.key == key)
    with engine.begin() as conn:
        return conn.execute(stmt.values(resolved_at=sa.func.now())).rowcount
