"""Peak memory of a poll and of an emit with 1,000,000 posts recorded, against an empty database.

Each measurement runs in a fresh child process (python -m benchmarks.memory_bench --child poll|emit)
doing the same work in both databases: the poll finds 100 new posts above 200 recorded ones (two
pages of /new, one of /hot), the emit sends 300 pending events. The child reports the peak of
Python allocations during the call (tracemalloc) and its peak resident set size (VmHWM), before
and after the call. Memory should not grow with the number of posts already recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

from benchmarks.common import bulk_load_posts, row, throwaway_database
from reddit_dagster import db
from reddit_dagster.posts import parse_post
from reddit_dagster.simulators.fake_amplitude import V2_PATH, FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit
from reddit_dagster.store import record_new_posts

EXISTING = 1_000_000
SUB = "healthcare"
KEY = "bench-amplitude-key"
ROOT = Path(__file__).resolve().parent.parent


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries that over
    from the parent across fork and exec, so a child of a big parent would report the parent's."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(role: str) -> None:
    from reddit_dagster.emit import emit_due
    from reddit_dagster.ingest import poll_subreddits
    from reddit_dagster.settings import Settings

    settings = Settings()
    engine = db.create_engine(db.app_url(settings))
    rss_before_kib = peak_rss_kib()
    tracemalloc.start()
    if role == "poll":
        [result] = poll_subreddits(engine, settings)
        assert result.ok and len(result.new_ids) == 100, result.summary()
    else:
        emitted = emit_due(engine, settings)
        assert emitted.sent == 300, emitted.summary()
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after_kib = peak_rss_kib()
    print(json.dumps({"peak_python_bytes": peak, "rss_before_kib": rss_before_kib, "rss_after_kib": rss_after_kib}))


def run_child(role: str, env: dict[str, str]) -> dict[str, int]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory_bench", "--child", role], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{role} child failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> dict[str, float]:
    print(f"memory: poll and emit in a child process, empty database vs {EXISTING:,} posts recorded")
    results: dict[tuple[str, str], dict[str, int]] = {}
    with FakeReddit(ratelimit_budget=1_000_000, seed=2) as reddit:
        reddit.add_posts(SUB, 300)
        older = [parse_post(post) for post in reddit.posts(SUB)[100:]]
        for label, existing in (("empty", 0), ("full", EXISTING)):
            with throwaway_database() as (url, engine), FakeAmplitude(api_keys={KEY}, eps_threshold=0) as amplitude:
                if existing:
                    bulk_load_posts(engine, existing)
                record_new_posts(engine, older)
                env = dict(os.environ) | {
                    "DATABASE_URL": db.libpq_url(url), "SUBREDDITS": SUB, "REDDIT_API_URL": reddit.url,
                    "REDDIT_WWW_URL": reddit.url, "AMPLITUDE_API_KEY": KEY,
                    "AMPLITUDE_SERVER_URL": amplitude.url + V2_PATH, "LOG_LEVEL": "WARNING",
                }
                env.pop("REDDIT_CLIENT_ID", None)
                env.pop("REDDIT_CLIENT_SECRET", None)
                for role in ("poll", "emit"):
                    results[(role, label)] = run_child(role, env)

    figures: dict[str, float] = {}
    for role in ("poll", "emit"):
        empty, full = results[(role, "empty")], results[(role, "full")]
        for label, result in (("empty database", empty), (f"{EXISTING:,} posts", full)):
            before, after = result["rss_before_kib"] / 1024, result["rss_after_kib"] / 1024
            rss = f"peak RSS {after:.0f} MiB (before the call {before:.0f})"
            row(f"{role}: peak Python allocations, {label}", f"{result['peak_python_bytes'] / 2**20:.1f} MiB", rss)
        ratio = full["peak_python_bytes"] / empty["peak_python_bytes"]
        rss_ratio = full["rss_after_kib"] / empty["rss_after_kib"]
        row(f"{role}: ratio full / empty (allocations, RSS)", f"{ratio:.2f}x, {rss_ratio:.2f}x", "goal: flat (~1x)")
        figures |= {f"{role}_peak_mib_empty": empty["peak_python_bytes"] / 2**20,
                    f"{role}_peak_mib_full": full["peak_python_bytes"] / 2**20,
                    f"{role}_memory_ratio": ratio, f"{role}_rss_ratio": rss_ratio}
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["poll", "emit"])
    args = parser.parse_args()
    if args.child:
        child(args.child)
    else:
        main()
