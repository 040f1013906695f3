"""Hostile content and Reddit's error pages through `reddit-dagster poll`: each failing subreddit is
one clean error line, the others are recorded, and once Reddit recovers nothing is lost."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster.events import insert_id_for
from reddit_dagster.schema import posts
from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import ABSENT, FakeReddit
from tests.reliability.ground_truth import check_ground_truth
from tests.reliability.harness import (
    SUB,
    assert_clean_output,
    assert_restart_sends_nothing,
    error_lines,
    pipeline_env,
    run_cli,
)

pytestmark = pytest.mark.timeout(150)

SQL_INJECTION = "Robert'); DROP TABLE posts; -- \" OR 1=1; DELETE FROM event_outbox"
LONG_TITLE = "long title " + "x" * 100_000
HOSTILE: dict[str, dict[str, object]] = {
    "nul": {"title": "nul\x00byte in the title", "selftext": "and\x00in the body"},
    "surrogate": {"title": "lone surrogate \ud800 here", "selftext": "\udfff"},
    "sql": {"title": SQL_INJECTION, "author": "robert'tables", "link_flair_text": "'; DROP TABLE flair; --"},
    "markup": {"title": "<script>alert(1)</script> <img src=x onerror=alert(2)> &amp; &lt;",
               "url": "javascript:alert(1)"},
    "unicode": {"title": "\u202eevil RTL\u202c \u200f\u200b zero-width, emoji 🏥😀👩‍⚕️, combining e\u0301",
                "author": "用户名"},
    "long": {"title": LONG_TITLE, "selftext": "body " * 50_000, "author": "a" * 1500},
    "json": {"title": '{"kind": "Listing", "data": {"children": []}}', "link_flair_text": "null"},
    "deleted": {"author": "[deleted]"},
    "absent": {"author": ABSENT, "title": ABSENT, "url": ABSENT, "link_flair_text": ABSENT, "domain": ABSENT},
}
# Subreddit -> (how it fails, words its error line must contain).
FAILING = {
    "privatesub": ("private", ["SubredditUnavailable", "private"]),
    "bannedsub": ("banned", ["SubredditUnavailable", "banned"]),
    "ghostsub": ("nonexistent", ["SubredditUnavailable", "nonexistent or banned"]),
    "blockedsub": ("403_blocked_html", ["RedditResponseError", "HTTP 403", "HTML page", "Blocked"]),
    "htmlsub": ("200_html", ["RedditResponseError", "HTTP 200 with an HTML page"]),
    "brokensub": ("malformed_json", ["RedditResponseError", "malformed or truncated JSON"]),
    "shapesub": ("wrong_shape", ["RedditResponseError", "not a Listing"]),
    "throttledsub": ("429_html", ["RedditUnavailable", "gave up after 4 attempts", "HTTP 429"]),
}
INVALID_NAME = "x'or'1'='1"


def test_hostile_content_and_error_pages_then_recovery(
    engine: Engine, fake_reddit_factory: Callable[..., FakeReddit],
    amplitude_factory: Callable[..., FakeAmplitude], child_env: dict[str, str],
):
    reddit = fake_reddit_factory(ratelimit_budget=1_000_000, seed=21)
    amplitude = amplitude_factory()
    reddit.add_posts(SUB, 10)
    hostile_ids = {name: reddit.add_post(SUB, **fields)["id"] for name, fields in HOSTILE.items()}
    reddit.add_posts("flakysub", 3)
    reddit.fail_next("503", count=1, path_contains="/r/flakysub/new")  # retried within the same poll
    for sub, (failure, _words) in FAILING.items():
        reddit.add_posts(sub, 3)
        if failure in ("private", "banned", "nonexistent"):
            reddit.set_subreddit_state(sub, failure)
        else:
            # Retryable faults for every attempt (4), the others fail the poll at once.
            reddit.fail_next(failure, count=4 if failure == "429_html" else 1, path_contains=f"/r/{sub}/new")
    subreddits = [SUB, "flakysub", *FAILING]

    failing_env = pipeline_env(child_env, reddit, amplitude, ",".join([*subreddits, INVALID_NAME]))
    first = run_cli(failing_env, "poll")
    assert first.returncode == 1
    assert_clean_output(first)
    assert [line.split(":")[0] for line in first.stdout.splitlines()] == [f"r/{SUB} poll", "r/flakysub poll"]
    errors = error_lines(first)
    assert len(errors) == len(FAILING) + 1, errors
    for line, (sub, (_failure, words)) in zip(errors, FAILING.items(), strict=False):
        assert line.startswith(f"error: r/{sub} poll failed"), line
        assert all(word in line for word in words), (words, line)
        assert len(line) < 600, line
    assert errors[-1].startswith(f"error: r/{INVALID_NAME} poll failed") and "invalid subreddit name" in errors[-1]

    for sub, (failure, _words) in FAILING.items():  # Reddit recovers
        if failure in ("private", "banned", "nonexistent"):
            reddit.set_subreddit_state(sub, "public")
    assert reddit.pending_faults == 0
    env = pipeline_env(child_env, reddit, amplitude, ",".join(subreddits))
    recovered = run_cli(env, "poll")
    assert recovered.returncode == 0, recovered.stderr
    assert_clean_output(recovered)
    emitted = run_cli(env, "emit")
    assert emitted.returncode == 0, emitted.stderr

    truth = check_ground_truth(engine, reddit, amplitude, "hostile content and Reddit error pages")
    assert truth.stored == 10 + len(HOSTILE) + 3 + 3 * len(FAILING) and not truth.excused
    with engine.connect() as conn:
        titles = dict(conn.execute(sa.select(posts.c.id, posts.c.title)).all())
    events = {event["insert_id"]: event for event in amplitude.stored_events()}
    sent_title = {name: events[insert_id_for(post_id)]["event_properties"].get("title")
                  for name, post_id in hostile_ids.items()}
    assert titles[hostile_ids["sql"]] == SQL_INJECTION and sent_title["sql"] == SQL_INJECTION
    assert titles[hostile_ids["nul"]] == "nul\ufffdbyte in the title" == sent_title["nul"]
    assert titles[hostile_ids["surrogate"]] == "lone surrogate \ufffd here"
    assert titles[hostile_ids["long"]] == LONG_TITLE and sent_title["long"] == LONG_TITLE[:1024]
    assert titles[hostile_ids["unicode"]] == HOSTILE["unicode"]["title"] == sent_title["unicode"]
    assert titles[hostile_ids["absent"]] == "" and events[insert_id_for(hostile_ids["absent"])]["device_id"]
    assert_restart_sends_nothing(env, engine, reddit, amplitude)
