"""SIGKILLs of pollers and emitters at random moments while posts arrive, then recovery.

The default run kills 24 processes over ~1,500 posts; the soak run (`make soak`) 100 over 20,000.
Pollers and emitters are forked, long-lived processes (workers.py): a kill can land anywhere in a
walk, a record transaction, a send or a settle. After the kills, clean processes take over, then
the real `reddit-dagster poll` and `emit` find nothing to do, and the ground truth must hold.
"""

from __future__ import annotations

import collections
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import Engine

from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit
from tests.reliability.ground_truth import check_ground_truth
from tests.reliability.harness import (
    SUB,
    Workers,
    assert_restart_sends_nothing,
    count,
    live_ids,
    pending,
    pipeline_env,
    recorded,
    wait_until,
)

pytestmark = pytest.mark.timeout(240)

# Arrivals keep the unrecorded backlog far inside the ~1000 posts a listing reaches: the pipeline
# promises no loss as long as some poll runs before 1000 posts pile up (DESIGN §3.5).
MAX_BACKLOG = 400
BURSTS = (0, 1, 5, 20, 60, 150, 250)


@dataclass
class KillFigures:
    posts: int
    kills: collections.Counter[str]
    interrupted_sends: int  # emitter kills that left rows leased (mid claim/send/settle)
    seconds: float

    def summary(self) -> str:
        return (f"kills: {sum(self.kills.values())} SIGKILLs ({self.kills['poll']} pollers, {self.kills['emit']} "
                f"emitters; {self.interrupted_sends} emitters killed holding leased events) over {self.posts} posts "
                f"in {self.seconds:.0f} s")


def kill_scenario(engine: Engine, reddit: FakeReddit, amplitude: FakeAmplitude, workers: Workers, *,
                  posts: int, kills: int, seed: int, recovery_timeout: float) -> KillFigures:
    rng = random.Random(seed)
    started = time.monotonic()
    reddit.add_posts(SUB, 50)
    added = 50
    for role in ("poll", "poll", "emit", "emit"):
        workers.start(role)
    killed: collections.Counter[str] = collections.Counter()
    interrupted = 0

    def arrive() -> int:
        if added >= posts or added - recorded(engine) > MAX_BACKLOG:
            return 0
        n = min(rng.choice(BURSTS), posts - added)
        reddit.add_posts(SUB, n)
        return n

    while sum(killed.values()) < kills:
        added += arrive()
        role = rng.choice(["poll", "emit"])
        victim = rng.choice(workers.pids(role))
        if rng.random() < 0.5:  # a random moment ...
            time.sleep(rng.uniform(0.0, 0.4))
        else:  # ... or just as a request reaches the fake (mid-walk, or between store and settle)
            log = amplitude.requests_log if role == "emit" else reddit.requests_log
            before = len(log)
            deadline = time.monotonic() + 2.0
            while len(log) == before and time.monotonic() < deadline:
                time.sleep(0.005)
        name = workers.running[victim]
        assert workers.kill(victim) == -signal.SIGKILL
        killed[role] += 1
        if role == "emit":
            interrupted += bool(count(engine, "SELECT count(*) FROM event_outbox WHERE lease_owner = :name "
                                              "AND status = 'pending'", name=name))
        workers.start(role)

    while added < posts:  # the rest of the posts, at the pace the pipeline keeps up with
        n = arrive()
        added += n
        if not n:
            time.sleep(0.05)
    live = live_ids(reddit)
    wait_until(lambda: recorded(engine) >= len(live) and pending(engine) == 0, recovery_timeout,
               "recovery: every post recorded and sent", every=0.2)
    assert set(workers.stop_all().values()) == {0}, workers.log_file.read_text()[-3000:]
    assert not any(record["gap"] for record in workers.records("poll"))
    return KillFigures(posts=added, kills=killed, interrupted_sends=interrupted, seconds=time.monotonic() - started)


def run(engine: Engine, fake_reddit_factory: Callable[..., FakeReddit],
        amplitude_factory: Callable[..., FakeAmplitude], child_env: dict[str, str],
        workers_factory: Callable[[dict[str, str]], Workers], *, posts: int, kills: int,
        recovery_timeout: float) -> None:
    reddit = fake_reddit_factory(ratelimit_budget=10_000_000, seed=13)
    amplitude = amplitude_factory()
    env = pipeline_env(child_env, reddit, amplitude)
    workers = workers_factory(env | {"WORKER_LEASE_S": "2", "WORKER_BATCH": "100"})
    figures = kill_scenario(engine, reddit, amplitude, workers, posts=posts, kills=kills, seed=17,
                            recovery_timeout=recovery_timeout)
    print(figures.summary(), flush=True)
    assert min(figures.kills.values()) >= kills // 4
    assert figures.interrupted_sends >= 1, "no emitter was killed while holding a lease"
    assert_restart_sends_nothing(env, engine, reddit, amplitude)
    truth = check_ground_truth(engine, reddit, amplitude, f"{sum(figures.kills.values())} SIGKILLs, then recovery")
    assert truth.listed >= posts and not truth.excused


def test_sigkills_of_pollers_and_emitters_then_recovery(engine: Engine, fake_reddit_factory, amplitude_factory,
                                                        child_env, workers_factory):
    run(engine, fake_reddit_factory, amplitude_factory, child_env, workers_factory, posts=1500, kills=24,
        recovery_timeout=60)


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_soak_20000_posts_100_sigkills(engine: Engine, fake_reddit_factory, amplitude_factory, child_env,
                                       workers_factory):
    run(engine, fake_reddit_factory, amplitude_factory, child_env, workers_factory, posts=20_000, kills=100,
        recovery_timeout=600)
