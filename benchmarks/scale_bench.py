"""Scale figure: posts recorded and events acknowledged per second with 1 and 2 worker processes
over the same simulated subreddits, and Reddit requests per poll cycle.

A "worker" here is a process polling its share of the subreddits one by one (poll_subreddit, as
one `subreddit_poll` partition run does) and draining the outbox (emit_due), all of them drawing
from the shared Reddit budget (REDDIT_SHARED_LIMIT). The Celery path adds Dagster's per-run and
per-step overhead on top; tests/test_celery.py shows it working, this measures the work itself.

    python -m benchmarks.scale_bench [--subreddits 40] [--posts 25]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

from sqlalchemy.engine import URL

from benchmarks.common import throwaway_database
from reddit_dagster import db
from reddit_dagster.emit import emit_due
from reddit_dagster.ingest import poll_subreddit
from reddit_dagster.reddit import RedditClient
from reddit_dagster.settings import Settings
from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit

AMPLITUDE_KEY = "test-amplitude-key"


def settings_for(url: URL, reddit: FakeReddit, amplitude: FakeAmplitude, names: list[str]) -> Settings:
    return Settings(
        database_url=db.libpq_url(url),
        subreddits=names,
        reddit_api_url=reddit.url,
        reddit_www_url=reddit.url,
        amplitude_api_key=AMPLITUDE_KEY,
        amplitude_server_url=f"{amplitude.url}/2/httpapi",
        reddit_shared_limit=True,
        # A budget far above Reddit's so the figure measures our work; with Reddit's real budget
        # (1000 per 600 s) a cycle takes at least requests / 1.65 s however many workers poll.
        reddit_rate_budget=100_000,
    )


def worker(settings: Settings, names: list[str]) -> None:
    engine = db.create_engine(db.app_url(settings))
    client = RedditClient.from_settings(settings)
    try:
        for name in names:
            result = poll_subreddit(engine, client, name, overlap_margin=settings.overlap_margin)
            if result.error:
                raise SystemExit(f"poll failed: {result.error}")
            emit_due(engine, settings)
        emit_due(engine, settings)
    finally:
        client.close()
        engine.dispose()


def run_workers(settings: Settings, names: list[str], workers: int) -> float:
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=worker, args=(settings, names[i::workers])) for i in range(workers)]
    started = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=600)
        if process.exitcode != 0:
            raise SystemExit(f"a worker failed (exit code {process.exitcode})")
    return time.perf_counter() - started


def measure(workers: int, subreddits: int, posts: int) -> dict[str, float]:
    names = [f"bench{i:03d}" for i in range(subreddits)]
    with throwaway_database("rdscale") as (url, _engine), FakeReddit() as reddit:
        amplitude = FakeAmplitude()
        amplitude.start()
        try:
            for name in names:
                reddit.add_posts(name, posts)
            settings = settings_for(url, reddit, amplitude, names)
            elapsed = run_workers(settings, names, workers)
            acknowledged = len(amplitude.stored_insert_ids())
            before = len(reddit.requests_log)
            run_workers(settings, names, workers)  # an idle cycle: nothing new anywhere
            idle_requests = len(reddit.requests_log) - before
        finally:
            amplitude.stop()
    total = subreddits * posts
    if acknowledged != total:
        raise SystemExit(f"{acknowledged} events acknowledged, expected {total}")
    return {
        "seconds": elapsed,
        "posts_per_s": total / elapsed,
        "events_per_s": acknowledged / elapsed,
        "requests_per_idle_cycle": idle_requests,
        "requests_per_subreddit": idle_requests / subreddits,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subreddits", type=int, default=40)
    parser.add_argument("--posts", type=int, default=25, help="posts per subreddit")
    args = parser.parse_args(argv)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    one = measure(1, args.subreddits, args.posts)
    two = measure(2, args.subreddits, args.posts)
    print(f"scale: {args.subreddits} subreddits x {args.posts} posts, shared Reddit budget")
    for label, m in (("1 worker ", one), ("2 workers", two)):
        print(
            f"  {label}: {m['posts_per_s']:8.1f} posts recorded/s, {m['events_per_s']:8.1f} events acknowledged/s "
            f"({m['seconds']:.2f} s); idle cycle {m['requests_per_idle_cycle']:.0f} Reddit requests "
            f"({m['requests_per_subreddit']:.1f} per subreddit)"
        )
    print(f"  with Reddit's real budget a cycle of 50 idle subreddits takes >= {100 / (990 / 601):.0f} s")
    print(
        f"  ratio 2/1 workers: posts {two['posts_per_s'] / one['posts_per_s']:.2f}x, "
        f"events {two['events_per_s'] / one['events_per_s']:.2f}x; "
        f"Reddit requests per cycle per subreddit {two['requests_per_subreddit']:.1f} "
        f"(50 subreddits: {50 * two['requests_per_subreddit']:.0f} per cycle)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
