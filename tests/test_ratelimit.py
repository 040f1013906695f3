"""The shared Reddit request budget (ratelimit.py): real processes, real PostgreSQL, the fake Reddit
enforcing a small budget (it answers 429 past it)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster.ratelimit import PUBLIC_KEY, SharedRateLimiter
from reddit_dagster.reddit import RedditClient
from reddit_dagster.schema import reddit_rate_limit
from reddit_dagster.settings import Settings
from reddit_dagster.simulators.fake_reddit import FakeReddit

pytestmark = pytest.mark.timeout(120)

BUDGET = 40
WINDOW_S = 3
PROCESSES = 3
REQUESTS_EACH = 25

# One worker process: waits for "go" on stdin (a start barrier, so all of them compete for the
# same window), then makes its requests through a client built from the environment.
WORKER = """
import sys
from reddit_dagster.reddit import RedditClient
from reddit_dagster.settings import Settings

client = RedditClient.from_settings(Settings())
print("ready", flush=True)
sys.stdin.readline()
for _ in range(int(sys.argv[1])):
    client.new(sys.argv[2])
print("done", client.requests_made, flush=True)
client.close()
"""


def run_workers(fake: FakeReddit, env: dict[str, str]) -> float:
    """Start PROCESSES workers, release them together, wait for all; returns the seconds taken."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(REQUESTS_EACH), f"sub{i}"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready", worker.stderr
        started = time.monotonic()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=90) for worker in workers]
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-2000:]
        assert out.startswith("done"), out
    return elapsed


def worker_env(child_env: dict[str, str], fake: FakeReddit, *, shared: bool) -> dict[str, str]:
    env = child_env | {"REDDIT_API_URL": fake.url, "REDDIT_WWW_URL": fake.url}
    if shared:
        env |= {"REDDIT_SHARED_LIMIT": "1", "REDDIT_RATE_BUDGET": str(BUDGET), "REDDIT_RATE_WINDOW_S": str(WINDOW_S)}
    return env


def statuses(fake: FakeReddit) -> list[int]:
    return [entry["status"] for entry in fake.requests_log if "/new" in entry["path"]]


def test_processes_sharing_the_budget_never_draw_a_429(
    engine: Engine, child_env: dict[str, str], fake_reddit_factory: Callable[..., FakeReddit]
) -> None:
    fake = fake_reddit_factory(ratelimit_budget=BUDGET, ratelimit_window_s=WINDOW_S)
    elapsed = run_workers(fake, worker_env(child_env, fake, shared=True))

    assert statuses(fake) == [200] * (PROCESSES * REQUESTS_EACH)
    with engine.connect() as conn:
        row = conn.execute(sa.select(reddit_rate_limit)).mappings().one()
    assert row["client_key"] == PUBLIC_KEY and row["granted"] == PROCESSES * REQUESTS_EACH
    assert row["reported_remaining"] is not None and row["reported_at"] is not None
    # 75 requests at most BUDGET per window: the limiter held them back, over more than one window.
    assert elapsed > WINDOW_S


def test_without_the_shared_budget_the_same_processes_draw_429s(
    engine: Engine, child_env: dict[str, str], fake_reddit_factory: Callable[..., FakeReddit]
) -> None:
    """The control: each process paces only by what it sees itself, so together they overrun."""
    fake = fake_reddit_factory(ratelimit_budget=BUDGET, ratelimit_window_s=WINDOW_S)
    run_workers(fake, worker_env(child_env, fake, shared=False))
    assert 429 in statuses(fake)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(reddit_rate_limit)).scalar_one() == 0


def test_headers_seen_by_one_worker_hold_back_every_worker(engine: Engine) -> None:
    first = SharedRateLimiter(engine, "client-a", budget=100, window_s=60)
    other = SharedRateLimiter(engine, "client-a", budget=100, window_s=60)
    unrelated = SharedRateLimiter(engine, "client-b", budget=100, window_s=60)
    assert first.try_acquire().granted

    first.observe(0.0, 5.0)  # Reddit says the window's budget is spent, resets in 5 s
    blocked = other.try_acquire()
    assert not blocked.granted and 5.0 <= blocked.wait_s <= 6.5
    assert unrelated.try_acquire().granted  # budgets are per client id

    first.observe(None, None, retry_after_s=30.0)  # a 429 asks for longer: the longer wait wins
    assert 29.0 <= other.try_acquire().wait_s <= 30.5
    assert other.state()["reported_remaining"] == 0.0


def test_bucket_refills_at_the_budget_rate(engine: Engine) -> None:
    limiter = SharedRateLimiter(engine, "client-c", budget=20, window_s=9, burst=4)
    assert limiter.rate_per_s == pytest.approx(16 / 10)
    granted = [limiter.try_acquire().granted for _ in range(5)]
    assert granted == [True, True, True, True, False]
    waited = limiter.acquire()  # the fifth token arrives after ~1/rate seconds
    assert 0.3 < waited < 1.0
    # A low remaining caps the tokens: no more requests than Reddit says are left.
    limiter.observe(1.0, 9.0)
    with engine.begin() as conn:
        conn.execute(sa.update(reddit_rate_limit).values(tokens=4.0, refilled_at=sa.func.clock_timestamp()))
    limiter.observe(1.0, 9.0)
    assert [limiter.try_acquire().granted for _ in range(2)] == [True, False]


def test_client_uses_the_shared_limiter_only_when_enabled(libpq_database_url: str) -> None:
    alone = RedditClient.from_settings(Settings(database_url=libpq_database_url))
    shared = RedditClient.from_settings(
        Settings(database_url=libpq_database_url, reddit_shared_limit=True, reddit_client_id="abc")
    )
    try:
        assert alone.limiter is None
        assert shared.limiter is not None and shared.limiter.client_key == "abc"
        assert shared.limiter.budget == 1000 and shared.limiter.rate_per_s == pytest.approx(990 / 601)
    finally:
        alone.close()
        shared.close()
