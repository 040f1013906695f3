"""Reads and writes of the pipeline's tables that several modules share.

The record path is the heart of the exactly-once argument (DESIGN §3.1): one transaction inserts
the posts with ON CONFLICT (id) DO NOTHING RETURNING id, and outbox rows for exactly the returned
ids. Two processes racing on one post: the primary key lets one win, the loser gets nothing back
and writes no outbox row. There is no SELECT-then-INSERT and no in-memory seen-set.
"""

from __future__ import annotations

import json
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

# One statement records a whole walk: the data-modifying CTE inserts the posts, and the outbox
# insert joins exactly the ids that CTE returned, so both land or neither does. Rows arrive as one
# JSON parameter (one round trip, whatever the batch size) and are inserted in id order, so
# concurrent statements take the unique-index locks in one order and cannot deadlock.
_RECORD_SQL = sa.text(
    """
    WITH input AS (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
            id text, subreddit text, title text, author text, created_utc double precision,
            permalink text, url text, domain text, is_self boolean, flair text, over_18 boolean,
            raw jsonb, insert_id text, payload jsonb)
    ), new AS (
        INSERT INTO posts (id, subreddit, title, author, created_utc, permalink, url, domain,
                           is_self, flair, over_18, raw)
        SELECT id, subreddit, title, author, to_timestamp(created_utc), permalink, url, domain,
               is_self, flair, over_18, raw
        FROM input ORDER BY id
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    )
    INSERT INTO event_outbox (insert_id, post_id, event_type, schema_version, payload)
    SELECT input.insert_id, input.id, :event_type, :schema_version, input.payload
    FROM input JOIN new USING (id)
    ORDER BY input.id
    RETURNING post_id
    """
)


def _record_row(post: Post) -> dict[str, Any]:
    event = build_event(post)
    return {
        "id": post.id,
        "subreddit": post.subreddit,
        "title": post.title,
        "author": post.author,
        "created_utc": post.created_utc,
        "permalink": post.permalink,
        "url": post.url,
        "domain": post.domain,
        "is_self": post.is_self,
        "flair": post.flair,
        "over_18": post.over_18,
        "raw": post.raw,
        "insert_id": event["insert_id"],
        "payload": event,
    }


def record_new_posts(engine: Engine, new_or_known: Iterable[Post]) -> list[str]:
    """Record the posts never seen before, each with its outbox row, atomically.

    Returns the ids this call inserted (sorted). Safe against any number of concurrent callers.
    """
    by_id = {post.id: post for post in new_or_known}
    if not by_id:
        return []
    rows = json.dumps([_record_row(by_id[post_id]) for post_id in sorted(by_id)])
    with engine.begin() as conn:
        inserted = conn.execute(
            _RECORD_SQL, {"rows": rows, "event_type": EVENT_TYPE, "schema_version": SCHEMA_VERSION}
        )
        return sorted(inserted.scalars())


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
