"""Bursts with 3 `reddit-dagster poll` and 2 `reddit-dagster emit` processes running at once."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine

from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit
from tests.reliability.ground_truth import check_ground_truth
from tests.reliability.harness import (
    SUB,
    assert_clean_output,
    assert_restart_sends_nothing,
    finish,
    pipeline_env,
    run_cli,
    start_cli,
)

pytestmark = pytest.mark.timeout(180)

# Posts added just before each round; the first is the 250-post burst between two polls.
BURSTS = (250, 120)


def test_bursts_with_three_pollers_and_two_emitters_at_once(
    engine: Engine, fake_reddit_factory: Callable[..., FakeReddit],
    amplitude_factory: Callable[..., FakeAmplitude], child_env: dict[str, str],
):
    rng = random.Random(7)
    reddit = fake_reddit_factory(ratelimit_budget=1_000_000, seed=3)
    amplitude = amplitude_factory()
    env = pipeline_env(child_env, reddit, amplitude)
    reddit.add_posts(SUB, 30)
    first = run_cli(env, "poll")  # the history: the first poll walks it all
    assert first.returncode == 0 and first.stdout.startswith(f"r/{SUB} poll: 30 new"), first.stderr

    for burst in BURSTS:
        reddit.add_posts(SUB, burst)  # all at once: between two polls
        procs = [start_cli(env, "poll") for _ in range(3)] + [start_cli(env, "emit") for _ in range(2)]
        for _ in range(200):  # while they run, posts keep arriving (bounded)
            if all(proc.poll() is not None for proc in procs):
                break
            reddit.add_posts(SUB, rng.randint(0, 2))
            try:
                procs[0].wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        for done in map(finish, procs):
            assert done.returncode == 0, done.stderr
            assert_clean_output(done)
            assert len(done.stdout.splitlines()) == 1

    final_poll = run_cli(env, "poll")  # what arrived during the last round
    final_emit = run_cli(env, "emit")
    assert final_poll.returncode == 0 and final_emit.returncode == 0, final_poll.stderr + final_emit.stderr
    truth = check_ground_truth(engine, reddit, amplitude, "bursts, 3 pollers + 2 emitters")
    assert truth.listed >= 30 + sum(BURSTS) and not truth.excused
    assert_restart_sends_nothing(env, engine, reddit, amplitude)
    check_ground_truth(engine, reddit, amplitude, "bursts, after the restart")
