"""Freshness: time from a post appearing at the fake Reddit to its acknowledgement by the fake Amplitude.

The schedule is simulated, not Dagster's: a child process (python -m benchmarks.freshness_bench
--loop) calls poll_subreddits then emit_due at the start of every PERIOD_S second, the work one
tick of poll_schedule + emit_sensor does. Dagster's cron runs the poll at most once a minute (the
project's default is every 5 minutes, POLL_SCHEDULE_CRON) and adds run launch overhead, so in
production freshness is this figure plus up to one schedule period; the figure here is what the
pipeline itself adds. Posts appear at random moments; a post's acknowledgement time is when the fake
answered the request that stored it (its requests_log time stamp).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import row, throwaway_database
from reddit_dagster import db
from reddit_dagster.events import insert_id_for
from reddit_dagster.simulators.fake_amplitude import V2_PATH, FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit

SUB = "healthcare"
KEY = "bench-amplitude-key"
PERIOD_S = 1.0
POSTS = 40
ROOT = Path(__file__).resolve().parent.parent


def loop(seconds: float) -> None:
    """The simulated schedule: poll then emit at the start of every period, until stdin closes or time is up."""
    import select

    from reddit_dagster.emit import emit_due
    from reddit_dagster.ingest import poll_subreddits
    from reddit_dagster.settings import Settings

    settings = Settings()
    engine = db.create_engine(db.app_url(settings))
    print("ready", flush=True)
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        poll_subreddits(engine, settings)
        emit_due(engine, settings)
        tick += 1
        wait = start + tick * PERIOD_S - time.monotonic()
        if select.select([sys.stdin], [], [], max(wait, 0))[0] and not sys.stdin.readline():
            return  # stdin closed: the benchmark is over


def acknowledgement_times(amplitude: FakeAmplitude) -> dict[str, float]:
    """insert_id -> time the fake answered the request that stored it (stored in request order)."""
    stored = [event["insert_id"] for event in amplitude.stored_events()]
    times, position = {}, 0
    for entry in list(amplitude.requests_log):
        for insert_id in stored[position:position + entry["n_stored"]]:
            times[insert_id] = entry["ts"]
        position += entry["n_stored"]
    return times


def main() -> dict[str, float]:
    print(f"freshness: {POSTS} posts at random moments, poll + emit every {PERIOD_S:g} s (simulated schedule)")
    rng = random.Random(3)
    with (throwaway_database() as (url, _engine), FakeReddit(ratelimit_budget=1_000_000, seed=4) as reddit,
          FakeAmplitude(api_keys={KEY}, eps_threshold=0) as amplitude):
        reddit.add_posts(SUB, 20)  # history the first tick records
        env = dict(os.environ) | {
            "DATABASE_URL": db.libpq_url(url), "SUBREDDITS": SUB, "REDDIT_API_URL": reddit.url,
            "REDDIT_WWW_URL": reddit.url, "AMPLITUDE_API_KEY": KEY, "AMPLITUDE_SERVER_URL": amplitude.url + V2_PATH,
            "LOG_LEVEL": "WARNING",
        }
        env.pop("REDDIT_CLIENT_ID", None)
        env.pop("REDDIT_CLIENT_SECRET", None)
        runner = subprocess.Popen([sys.executable, "-m", "benchmarks.freshness_bench", "--loop", "300"], env=env,
                                  cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert runner.stdout is not None and runner.stdout.readline().strip() == "ready"
            amplitude.wait_for_stored(20, timeout=30)
            appeared: dict[str, float] = {}
            for _ in range(POSTS):
                time.sleep(rng.uniform(0.1, 1.0))  # the next post appears at a random moment
                post = reddit.add_post(SUB)
                appeared[insert_id_for(post["id"])] = time.time()
            if not amplitude.wait_for_stored(20 + POSTS, timeout=60):
                raise RuntimeError(f"only {len(amplitude.stored)} of {20 + POSTS} events arrived")
        finally:
            assert runner.stdin is not None
            runner.stdin.close()
            runner.wait(timeout=60)
        acknowledged = acknowledgement_times(amplitude)
    delays = sorted(acknowledged[insert_id] - appeared[insert_id] for insert_id in appeared)
    p50 = statistics.median(delays)
    p95 = statistics.quantiles(delays, n=20)[-1]
    row("freshness p50 (post appears -> Amplitude acknowledges)", f"{p50:.2f} s")
    row("freshness p95", f"{p95:.2f} s", f"max {delays[-1]:.2f} s")
    row("ratio p50, p95 / schedule period", f"{p50 / PERIOD_S:.2f}x, {p95 / PERIOD_S:.2f}x",
        f"period {PERIOD_S:g} s; uniform arrival alone gives 0.5x, 0.95x")
    return {"freshness_p50_s": p50, "freshness_p95_s": p95, "freshness_period_s": PERIOD_S}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", type=float, help="run the simulated schedule for at most this many seconds")
    args = parser.parse_args()
    if args.loop:
        loop(args.loop)
    else:
        main()
