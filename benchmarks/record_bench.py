"""Recording throughput: 10,000 new posts into an empty database and into one holding 1,000,000.

Baseline in the same run: the naive "check then insert" recorder (one SELECT and one INSERT per
post) that DESIGN §3.1 rules out, on the same database and data.
"""

from __future__ import annotations

import itertools

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from benchmarks.common import best_of, bulk_load_posts, row, throwaway_database
from reddit_dagster.events import EVENT_TYPE, SCHEMA_VERSION
from reddit_dagster.posts import Post, parse_post
from reddit_dagster.store import _record_row, record_new_posts

N = 10_000
EXISTING = 1_000_000
_counter = itertools.count()


def fresh_posts(n: int) -> list[Post]:
    batch = next(_counter)
    return [
        parse_post(
            {
                "id": f"r{batch:03x}{i:05x}",
                "created_utc": 1_767_225_600 + i,
                "title": f"A realistic title about prior authorization number {i}",
                "author": f"user_{i % 997}",
                "subreddit": "healthcare",
                "permalink": f"/r/healthcare/comments/r{batch:03x}{i:05x}/x/",
                "url": "https://example.org/article",
                "selftext": "body " * 40,
            }
        )
        for i in range(n)
    ]


def record_naively(engine: Engine, posts: list[Post]) -> None:
    from reddit_dagster.schema import event_outbox
    from reddit_dagster.schema import posts as posts_table

    with engine.begin() as conn:
        for post in posts:
            if conn.execute(sa.select(posts_table.c.id).where(posts_table.c.id == post.id)).first() is None:
                values = _record_row(post)
                outbox = {key: values.pop(key) for key in ("insert_id", "payload")}
                values["created_utc"] = post.created_at
                conn.execute(sa.insert(posts_table).values(values))
                conn.execute(
                    sa.insert(event_outbox).values(
                        post_id=post.id, event_type=EVENT_TYPE, schema_version=SCHEMA_VERSION, **outbox
                    )
                )


def time_record(engine: Engine, recorder) -> float:
    batches = [fresh_posts(N) for _ in range(3)]
    return best_of(3, lambda: recorder(engine, batches.pop()))


def main() -> dict[str, float]:
    print(f"record: {N:,} new posts per run, best of 3")
    with throwaway_database() as (_url, engine):
        ours_empty = time_record(engine, record_new_posts)
        naive_empty = time_record(engine, record_naively)
        row("record_new_posts, empty database", f"{N / ours_empty:,.0f} posts/s", "goal >= 20,000/s")
        row("naive check-then-insert, empty database", f"{N / naive_empty:,.0f} posts/s")
        row("ratio ours / naive", f"{naive_empty / ours_empty:.1f}x")
    with throwaway_database() as (_url, engine):
        bulk_load_posts(engine, EXISTING)
        ours_full = time_record(engine, record_new_posts)
        row(f"record_new_posts, {EXISTING:,} posts recorded", f"{N / ours_full:,.0f} posts/s")
        row("time ratio full / empty database", f"{ours_full / ours_empty:.2f}x", "goal <= 1.1x")
    return {"record_posts_per_s": N / ours_empty, "full_vs_empty": ours_full / ours_empty}


if __name__ == "__main__":
    main()
