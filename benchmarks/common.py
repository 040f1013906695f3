"""Helpers shared by the benchmark scripts: a throwaway database and a bulk loader."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from reddit_dagster import db

BASE_TIME = 1_700_000_000


@contextlib.contextmanager
def throwaway_database(prefix: str = "rdbench") -> Iterator[tuple[URL, Engine]]:
    url = db.app_url().set(database=f"{prefix}_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    engine = db.create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        db.drop_database(url)


def bulk_load_posts(engine: Engine, count: int, *, status: str = "sent") -> None:
    """Fill posts and event_outbox with `count` old posts in a few server-side statements."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """
                INSERT INTO posts (id, subreddit, title, author, created_utc, permalink, raw)
                SELECT 'b' || to_hex(n), 'healthcare', 'bulk post ' || n, 'author_' || (n % 5000),
                       to_timestamp(:base + n * 60), '/r/healthcare/comments/b' || to_hex(n) || '/',
                       jsonb_build_object('id', 'b' || to_hex(n))
                FROM generate_series(1, :count) AS n
                """
            ),
            {"count": count, "base": BASE_TIME - count * 60},
        )
        conn.execute(
            sa.text(
                """
                INSERT INTO event_outbox (insert_id, post_id, event_type, schema_version, payload, status,
                                          attempts, sent_at, created_at)
                SELECT 'reddit-post-created-' || id, id, 'Reddit Post Created', 1,
                       jsonb_build_object('insert_id', 'reddit-post-created-' || id), :status,
                       1, CASE WHEN :status = 'sent' THEN created_utc END, created_utc
                FROM posts WHERE id LIKE 'b%'
                """
            ),
            {"status": status},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE posts"))
        conn.execute(sa.text("VACUUM ANALYZE event_outbox"))


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The fastest of several runs, in seconds: the least disturbed by other load."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def row(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<58} {value:>14}  {note}", flush=True)
