"""A steady poll with nothing new: Reddit requests and database round trips, against the first poll.

The fake Reddit holds 1,000 posts (its whole reachable listing). The first poll walks all of it and
records everything; the steady polls after it find nothing new. HTTP requests are counted by the
fake, database round trips by a SQLAlchemy `before_cursor_execute` listener on the poll's engine
(one per statement sent to PostgreSQL), connection checkouts by a pool `checkout` listener.
"""

from __future__ import annotations

import statistics
import time

import sqlalchemy as sa

from benchmarks.common import row, throwaway_database
from reddit_dagster.ingest import poll_subreddit
from reddit_dagster.reddit import RedditClient
from reddit_dagster.simulators.fake_reddit import FakeReddit

SUB = "healthcare"
POSTS = 1_000
STEADY_POLLS = 20
UA = "linux:reddit-dagster-bench:0.1 (by /u/nobody)"


def main() -> dict[str, float]:
    print(f"steady poll: r/{SUB} with {POSTS:,} posts, nothing new; {STEADY_POLLS} polls after the first")
    with throwaway_database() as (_url, engine), FakeReddit(ratelimit_budget=1_000_000, seed=1) as fake:
        fake.add_posts(SUB, POSTS)
        round_trips = checkouts = 0

        def count_round_trip(*_args: object) -> None:
            nonlocal round_trips
            round_trips += 1

        def count_checkout(*_args: object) -> None:
            nonlocal checkouts
            checkouts += 1

        sa.event.listen(engine, "before_cursor_execute", count_round_trip)
        sa.event.listen(engine.pool, "checkout", count_checkout)
        client = RedditClient(api_url=fake.url, www_url=fake.url, user_agent=UA)

        def measured_poll() -> tuple[int, int, int, int, float]:
            """(requests to /new, requests to /hot, statements, connection checkouts, seconds) of one poll."""
            nonlocal round_trips, checkouts
            new_before, hot_before = fake.count_requests("/new"), fake.count_requests("/hot")
            round_trips = checkouts = 0
            start = time.perf_counter()
            result = poll_subreddit(engine, client, SUB)
            seconds = time.perf_counter() - start
            assert result.ok, result.error
            return (fake.count_requests("/new") - new_before, fake.count_requests("/hot") - hot_before,
                    round_trips, checkouts, seconds)

        first = measured_poll()
        steady = [measured_poll() for _ in range(STEADY_POLLS)]
        client.close()
    assert {s[:4] for s in steady} == {steady[0][:4]}, "every steady poll should do the same work"
    new, hot, trips, connections, _ = steady[0]
    seconds = statistics.median(s[4] for s in steady)
    row("first poll (walks the whole listing): /new requests", f"{first[0]}")
    row("first poll: database round trips", f"{first[2]}")
    row("steady poll, nothing new: /new requests", f"{new}", "goal 1")
    row("steady poll: /hot requests (front-page snapshot)", f"{hot}")
    row("steady poll: database round trips (statements)", f"{trips}", f"first poll: {first[2]}")
    row("steady poll: connection checkouts", f"{connections}",
        "each adds a pre-ping, BEGIN and COMMIT/ROLLBACK at the driver")
    row("steady poll: median time", f"{seconds * 1000:.0f} ms", f"first poll: {first[4] * 1000:.0f} ms")
    row("ratio /new requests steady / first poll", f"{new / first[0]:.2f}x")
    return {"steady_new_requests": new, "steady_hot_requests": hot, "steady_round_trips": trips,
            "steady_checkouts": connections,
            "first_new_requests": first[0], "first_round_trips": first[2], "steady_poll_ms": seconds * 1000}


if __name__ == "__main__":
    main()
