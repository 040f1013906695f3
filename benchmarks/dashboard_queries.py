"""How the dashboard's health queries scale: times on an empty database vs one with 1M posts.

Creates a throwaway database next to the pipeline's (DATABASE_URL or the embedded server), bulk-
loads posts and outbox rows with INSERT ... SELECT generate_series, and drops it at the end.
Prints per-query medians (ms), the ratio full/empty, and the whole page's server-side render time
(Streamlit AppTest, uncached). Run: .venv/bin/python -m benchmarks.dashboard_queries [--posts N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from reddit_dagster import db, health

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
SUBREDDITS = ("healthcare", "AskDocs")

SEED_SQL = [
    # One post every 30 s going back in time (1M posts ≈ 347 days), two subreddits.
    """
    INSERT INTO posts (id, subreddit, title, author, created_utc, permalink, first_seen_at, raw)
    SELECT 'b' || to_hex(g), CASE WHEN g % 3 = 0 THEN 'AskDocs' ELSE 'healthcare' END,
           'bulk post number ' || g, 'author_' || (g % 1000), now() - g * interval '30 seconds',
           '/r/healthcare/comments/b' || to_hex(g) || '/', now() - g * interval '30 seconds' + interval '5 seconds',
           '{}'::jsonb
    FROM generate_series(1, :n) AS g
    """,
    # The newest 500 events pending, one in 10,000 dead, the rest sent 10 s after recording.
    """
    INSERT INTO event_outbox (insert_id, post_id, event_type, schema_version, payload, status, attempts,
                              created_at, sent_at, last_error)
    SELECT 'ev-b' || to_hex(g), 'b' || to_hex(g), 'reddit_post_created', 1, '{}'::jsonb,
           CASE WHEN g <= 500 THEN 'pending' WHEN g % 10000 = 0 THEN 'dead' ELSE 'sent' END,
           CASE WHEN g % 10000 = 0 THEN 8 ELSE 1 END,
           now() - g * interval '30 seconds' + interval '5 seconds',
           CASE WHEN g > 500 AND g % 10000 <> 0 THEN now() - g * interval '30 seconds' + interval '15 seconds' END,
           CASE WHEN g % 10000 = 0 THEN 'HTTP 400: invalid event' END
    FROM generate_series(1, :n) AS g
    """,
    # A poll per subreddit per minute for 70 days, one in 5,000 failed or with a gap.
    """
    INSERT INTO poll_log (subreddit, started_at, finished_at, new_posts, reached_known, gap, error)
    SELECT s, now() - g * interval '1 minute', now() - g * interval '1 minute' + interval '2 seconds', 1,
           g % 5000 <> 0, g % 10000 = 0, CASE WHEN g % 10000 = 5000 THEN 'HTTP 503' END
    FROM generate_series(1, 100000) AS g, unnest(ARRAY['healthcare', 'AskDocs']) AS s
    """,
    # Hot-listing snapshots every minute for 7 days, 25 ranks each.
    """
    INSERT INTO front_page (subreddit, snapshot_at, rank, post_id, title, author, permalink, score,
                            num_comments, stickied, over_18, created_utc)
    SELECT s, now() - m * interval '1 minute', r, 'b' || to_hex(r + m % 7), 'hot post ' || r, 'author',
           '/r/x/comments/' || r || '/', 100 - r, r, r = 1, false, now() - interval '1 day'
    FROM generate_series(1, 10080) AS m, generate_series(1, 25) AS r, unnest(ARRAY['healthcare', 'AskDocs']) AS s
    """,
    """
    INSERT INTO incidents (kind, key, message, opened_at, last_seen_at, resolved_at)
    SELECT 'run_failed', 'run-' || g, 'step failed', now() - g * interval '1 hour', now() - g * interval '1 hour',
           CASE WHEN g > 3 THEN now() - g * interval '1 hour' + interval '5 minutes' END
    FROM generate_series(1, 5000) AS g
    """,
]


def _in_transaction(engine: Engine, work: Callable[[Connection], object]) -> None:
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
        work(conn)


def query_suite(engine: Engine) -> dict[str, Callable[[], object]]:
    def run(work: Callable[[Connection], object]) -> Callable[[], object]:
        return lambda: _in_transaction(engine, work)

    return {
        "health (counts, polls, failures, dead letters)": run(lambda c: health.read_health(c, SUBREDDITS)),
        "front page + rank movement (per subreddit)": run(lambda c: health.read_front_page(c, "healthcare")),
        "activity per hour (48 h)": run(lambda c: health.read_activity(c, "hour")),
        "activity per day (30 d)": run(lambda c: health.read_activity(c, "day")),
        "whole read_dashboard": lambda: health.read_dashboard(engine, SUBREDDITS, "hour"),
    }


def measure(engine: Engine, repeat: int) -> dict[str, float]:
    results = {}
    for name, call in query_suite(engine).items():
        call()  # warm the connection and the caches the way a running dashboard has them
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1000)
        results[name] = statistics.median(times)
    return results


def page_time(url: str, repeat: int) -> float:
    """Median server-side render of the whole page, with Streamlit's query cache cleared each time."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from reddit_dagster.settings import get_settings

    os.environ["DATABASE_URL"] = url
    os.environ["SUBREDDITS"] = ",".join(SUBREDDITS)
    get_settings.cache_clear()
    times = []
    for _ in range(repeat + 1):
        st.cache_data.clear()
        start = time.perf_counter()
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        times.append((time.perf_counter() - start) * 1000)
        if at.exception or any("Database unreachable" in e.value for e in at.error):
            raise RuntimeError(f"the page failed: {[e.value for e in [*at.exception, *at.error]]}")
    return statistics.median(times[1:])  # the first run also imports the script's modules


def seed(engine: Engine, posts: int) -> float:
    start = time.perf_counter()
    with engine.begin() as conn:
        for statement in SEED_SQL:
            conn.execute(sa.text(statement), {"n": posts})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--all-pending", action="store_true",
                        help="also measure with every event pending (Amplitude never configured)")
    args = parser.parse_args(argv)

    url = db.app_url().set(database=f"bench_dashboard_{os.getpid()}")
    db.upgrade(url)
    engine = db.create_engine(url)
    try:
        libpq = db.libpq_url(url)
        empty, empty_page = measure(engine, args.repeat), page_time(libpq, args.repeat)
        seconds = seed(engine, args.posts)
        print(f"seeded {args.posts:,} posts + outbox rows, 200k polls, 504k front-page rows in {seconds:.1f} s")
        full, full_page = measure(engine, args.repeat), page_time(libpq, args.repeat)
        label = f"{args.posts // 1000:,}k posts" if args.posts < 1_000_000 else f"{args.posts / 1e6:g}M posts"
        print(f"\n{'query (median ms)':<50}{'empty':>10}{label:>14}{'ratio':>8}")
        for name in empty:
            print(f"{name:<50}{empty[name]:>10.1f}{full[name]:>14.1f}{full[name] / empty[name]:>8.1f}")
        print(f"{'whole page, server side (AppTest, uncached)':<50}{empty_page:>10.0f}{full_page:>14.0f}"
              f"{full_page / empty_page:>8.1f}")
        if args.all_pending:
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE event_outbox SET status = 'pending', sent_at = NULL"))
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE event_outbox"))
            pending = measure(engine, args.repeat)
            print(f"\nall {args.posts:,} events pending: "
                  + ", ".join(f"{name.split(' (')[0]} {ms:.1f} ms" for name, ms in pending.items()))
    finally:
        engine.dispose()
        db.drop_database(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
