"""Late-approved posts, a deleted newest post, a post deleted before any successful poll, and a
restart over the same data, with the real `reddit-dagster poll` and `reddit-dagster emit`."""

from __future__ import annotations

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
    error_lines,
    pipeline_env,
    recorded,
    run_cli,
)

pytestmark = pytest.mark.timeout(150)


def test_late_approval_deleted_newest_post_and_restart(
    engine: Engine, fake_reddit_factory: Callable[..., FakeReddit],
    amplitude_factory: Callable[..., FakeAmplitude], child_env: dict[str, str],
):
    reddit = fake_reddit_factory(ratelimit_budget=1_000_000, seed=9)
    amplitude = amplitude_factory()
    env = pipeline_env(child_env, reddit, amplitude)
    reddit.add_posts(SUB, 20)
    late = reddit.add_post(SUB)["id"]
    reddit.remove_post(late)  # held by the spam filter before any poll saw it
    reddit.add_posts(SUB, 40)

    first = run_cli(env, "poll")
    assert first.returncode == 0 and first.stdout.startswith(f"r/{SUB} poll: 60 new"), first.stderr
    assert late not in reddit.ever_listed

    reddit.approve_post(late)  # back in /new at its original time: below 40 recorded posts
    newest = reddit.state()["posts"][SUB][0]
    reddit.delete_post(newest)  # the newest recorded post disappears from the listing
    burst = reddit.add_posts(SUB, 150)  # two pages of new posts
    doomed = burst[-1]["id"]  # on page 1 of the next walk
    reddit.fail_next("200_html", count=1, path_contains="after=t3_")  # page 2 of that walk breaks

    broken = run_cli(env, "poll")
    assert broken.returncode == 1
    assert_clean_output(broken)
    [line] = error_lines(broken)
    assert line.startswith(f"error: r/{SUB} poll failed") and "RedditResponseError" in line and "HTML" in line
    assert recorded(engine) == 60, "a walk that failed on page 2 must record nothing"
    assert doomed in reddit.ever_listed
    reddit.delete_post(doomed)  # listed by the failed walk only: never recordable

    recovered = run_cli(env, "poll")
    assert recovered.returncode == 0, recovered.stderr
    assert recovered.stdout.startswith(f"r/{SUB} poll: 150 new"), recovered.stdout  # 149 of the burst + late
    assert "GAP" not in recovered.stdout and "reached known posts" in recovered.stdout
    emitted = run_cli(env, "emit")
    assert emitted.returncode == 0 and emitted.stdout.startswith("emit: 210 sent, 0 dead"), emitted.stdout

    truth = check_ground_truth(engine, reddit, amplitude, "late approval, deleted newest post")
    assert truth.excused == [doomed] and truth.stored == 210
    assert_restart_sends_nothing(env, engine, reddit, amplitude)
    check_ground_truth(engine, reddit, amplitude, "late approval, after the restart")
