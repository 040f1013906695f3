"""The /new walk, the front-page snapshot and `reddit-dagster poll` against the fake Reddit (issue 3).

Real PostgreSQL (the `engine` fixture), the fake Reddit over real HTTP, real processes for the CLI.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster.ingest import PollResult, poll_subreddit, reconcile
from reddit_dagster.reddit import RedditClient
from reddit_dagster.schema import event_outbox, front_page, incidents, poll_log, posts
from reddit_dagster.settings import Settings
from reddit_dagster.simulators.fake_reddit import FakeReddit

pytestmark = pytest.mark.timeout(120)

SUB = "healthcare"
ROOT = Path(__file__).resolve().parent.parent
UA = "linux:reddit-dagster-tests:0.1 (by /u/nobody)"
ATTEMPTS = 3


@pytest.fixture
def fake(fake_reddit_factory: Callable[..., FakeReddit]) -> FakeReddit:
    # A large rate budget: these tests are about the walk, not about pacing.
    return fake_reddit_factory(ratelimit_budget=1_000_000, seed=11)


def make_client(fake: FakeReddit, **options: Any) -> RedditClient:
    return RedditClient(
        api_url=fake.url,
        www_url=fake.url,
        user_agent=UA,
        max_attempts=ATTEMPTS,
        backoff_base_s=0.01,
        max_wait_s=0.2,
        timeout_s=5.0,
        **options,
    )


def poll(engine: Engine, fake_or_client: FakeReddit | RedditClient, **options: Any) -> PollResult:
    client = make_client(fake_or_client) if isinstance(fake_or_client, FakeReddit) else fake_or_client
    return poll_subreddit(engine, client, SUB, **options)


def recorded_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.select(posts.c.id)))


def outbox_post_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(event_outbox.c.post_id)))


def poll_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(sa.select(poll_log).order_by(poll_log.c.id)).mappings()]


def live_ids(fake: FakeReddit) -> set[str]:
    return {post["id"] for post in fake.posts(SUB)}


def new_requests(fake: FakeReddit) -> int:
    return fake.count_requests(f"/r/{SUB}/new")


def hot_requests(fake: FakeReddit) -> int:
    return fake.count_requests(f"/r/{SUB}/hot")


# --- the walk ---------------------------------------------------------------------------------------


def test_first_poll_walks_the_whole_listing_then_steady_state_is_one_request(engine: Engine, fake: FakeReddit):
    fake.add_posts(SUB, 250)
    client = make_client(fake)
    first = poll(engine, client)
    assert first.ok, first.error
    assert len(first.new_ids) == 250 and recorded_ids(engine) == live_ids(fake)
    assert sorted(outbox_post_ids(engine)) == sorted(first.new_ids)
    assert (first.pages, first.reached_known, first.gap, first.front_page_rows) == (3, False, False, 100)
    assert first.dates_touched == sorted({datetime.fromtimestamp(p["created_utc"], UTC).date().isoformat()
                                          for p in fake.posts(SUB)})

    news, hots = new_requests(fake), hot_requests(fake)
    second = poll(engine, client)
    assert second.ok and second.new_ids == [] and second.reached_known is True
    assert (new_requests(fake) - news, hot_requests(fake) - hots) == (1, 1)
    assert (second.pages, second.requests) == (1, 2)
    rows = poll_rows(engine)
    assert [(r["new_posts"], r["pages"], r["requests"], r["gap"], r["error"]) for r in rows] == [
        (250, 3, 4, False, None),
        (0, 1, 2, False, None),
    ]
    assert rows[1]["reached_known"] is True and rows[1]["ratelimit_remaining"] is not None
    assert "\n" not in second.summary() and "0 new" in second.summary()


def test_small_subreddit_steady_state_is_one_request(engine: Engine, fake: FakeReddit):
    fake.add_posts(SUB, 7)  # fewer posts than the overlap margin: the listing's end is the normal stop
    assert len(poll(engine, fake).new_ids) == 7
    news = new_requests(fake)
    result = poll(engine, fake)
    assert result.ok and result.new_ids == [] and not result.gap and new_requests(fake) - news == 1


def test_burst_of_250_between_polls_is_fully_recorded(engine: Engine, fake: FakeReddit):
    fake.add_posts(SUB, 120)
    poll(engine, fake)
    burst = {p["id"] for p in fake.add_posts(SUB, 250)}
    result = poll(engine, fake)
    assert result.ok and set(result.new_ids) == burst
    assert (result.pages, result.reached_known, result.gap) == (3, True, False)
    assert recorded_ids(engine) == live_ids(fake) and len(outbox_post_ids(engine)) == 370


def test_late_approved_post_older_than_recorded_ones_is_recorded_next_poll(engine: Engine, fake: FakeReddit):
    added = fake.add_posts(SUB, 200)
    late = added[-20]["id"]  # 20th newest
    fake.remove_post(late)  # caught by the spam filter before we ever saw it
    assert late not in poll(engine, fake).new_ids
    burst = {p["id"] for p in fake.add_posts(SUB, 100)}
    fake.approve_post(late)  # back in /new at its original time: page 2, below recorded posts
    result = poll(engine, fake)
    assert set(result.new_ids) == burst | {late}
    assert result.pages == 2 and late in recorded_ids(engine)


def test_reconcile_recovers_a_late_approval_beyond_the_overlap_margin(engine: Engine, fake: FakeReddit):
    added = fake.add_posts(SUB, 300)
    late = added[-150]["id"]
    fake.remove_post(late)
    poll(engine, fake)
    fake.add_posts(SUB, 5)
    fake.approve_post(late)
    result = poll(engine, fake)
    assert len(result.new_ids) == 5 and late not in recorded_ids(engine)  # beyond the margin: not reached
    settings = Settings(reddit_api_url=fake.url, reddit_www_url=fake.url, subreddits=[SUB])
    deep = reconcile(engine, settings, SUB, run_id="r1")
    assert deep.ok and deep.new_ids == [late] and deep.kind == "reconcile" and deep.pages == 4
    assert deep.front_page_rows == 0 and not deep.gap
    assert poll_rows(engine)[-1]["kind"] == "reconcile" and poll_rows(engine)[-1]["run_id"] == "r1"


def test_deleting_the_newest_recorded_post_between_polls_changes_nothing(engine: Engine, fake: FakeReddit):
    fake.add_posts(SUB, 130)
    first = poll(engine, fake)
    newest = fake.posts(SUB)[0]["id"]
    fake.delete_post(newest)
    news = new_requests(fake)
    result = poll(engine, fake)
    assert result.ok and result.new_ids == [] and not result.gap and new_requests(fake) - news == 1
    more = {p["id"] for p in fake.add_posts(SUB, 3)}
    assert set(poll(engine, fake).new_ids) == more
    assert recorded_ids(engine) == set(first.new_ids) | more


def test_a_restart_records_nothing_new(engine: Engine, fake: FakeReddit):
    fake.add_posts(SUB, 180)
    poll(engine, make_client(fake))
    before = sorted(outbox_post_ids(engine))
    result = poll(engine, make_client(fake))  # a new process: no state but the database
    assert result.ok and result.new_ids == [] and sorted(outbox_post_ids(engine)) == before


def test_a_1500_post_gap_is_detected_recorded_and_raised(engine: Engine, fake: FakeReddit):
    fake.add_posts(SUB, 20)
    poll(engine, fake)
    fake.add_posts(SUB, 1500)
    result = poll(engine, fake)
    assert result.ok and result.gap and result.reached_known is False
    assert len(result.new_ids) == 1000  # the reachable listing, recorded anyway
    assert "GAP" in result.summary() and "\n" not in result.summary()
    assert poll_rows(engine)[-1]["gap"] is True
    with engine.connect() as conn:
        open_gaps = conn.execute(
            sa.select(incidents.c.key, incidents.c.message).where(incidents.c.kind == "gap",
                                                                  incidents.c.resolved_at.is_(None))
        ).all()
    assert [key for key, _ in open_gaps] == [SUB] and "end of the reachable listing" in open_gaps[0][1]
    after = poll(engine, fake)  # the next poll meets known posts again; the gap stays open for an operator
    assert after.ok and not after.gap and after.new_ids == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(incidents)
                            .where(incidents.c.resolved_at.is_(None))).scalar_one() == 1


def test_first_poll_over_a_long_listing_is_not_a_gap(engine: Engine, fake: FakeReddit):
    fake.add_posts(SUB, 1200)
    result = poll(engine, fake)
    assert result.ok and not result.gap and len(result.new_ids) == 1000
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(incidents)).scalar_one() == 0


def test_empty_page_mid_walk_restarts_from_the_top(engine: Engine, fake: FakeReddit):
    fake.add_posts(SUB, 100)
    poll(engine, fake)
    burst = {p["id"] for p in fake.add_posts(SUB, 250)}
    fake.fail_next("empty_page", path_contains="after=")  # as if page 1's last post vanished
    result = poll(engine, fake)
    assert result.ok and result.restarts == 1 and set(result.new_ids) == burst and not result.gap
    assert result.pages == 2 + 3


def test_anchors_that_keep_vanishing_fail_the_poll_and_record_nothing(engine: Engine, fake: FakeReddit):
    fake.add_posts(SUB, 90)
    poll(engine, fake)
    fake.add_posts(SUB, 250)
    before = recorded_ids(engine)
    first_pages = fake.count_requests("new.json?limit")
    # Each page-2 request is held for a second; meanwhile the anchor it names (page 1's last post)
    # is deleted, so Reddit's answer is an empty page, on the first walk and on the restart.
    fake.slow_s = 1.0
    fake.fail_next("slow", count=2, path_contains="after=")

    def delete_anchors() -> None:
        for n in (1, 2):
            assert fake.wait_for_requests("new.json?limit", first_pages + n, timeout=20)
            fake.delete_post(fake.posts(SUB)[99]["id"])

    deleter = threading.Thread(target=delete_anchors)
    deleter.start()
    result = poll(engine, fake, max_restarts=1)
    deleter.join(timeout=20)
    assert result.error is not None and result.error.startswith("ListingUnstable:")
    assert result.new_ids == [] and recorded_ids(engine) == before
    assert poll_rows(engine)[-1]["error"] == result.error and poll_rows(engine)[-1]["new_posts"] == 0
    retry = poll(engine, fake)
    assert retry.ok and recorded_ids(engine) == live_ids(fake)


@pytest.mark.parametrize(("fault", "count"), [("503", ATTEMPTS), ("reset", ATTEMPTS), ("malformed_json", 1)])
def test_failure_on_page_2_of_a_burst_records_nothing_and_the_next_poll_records_all(
    engine: Engine, fake: FakeReddit, fault: str, count: int
):
    fake.add_posts(SUB, 60)
    poll(engine, fake)
    before = recorded_ids(engine)
    burst = {p["id"] for p in fake.add_posts(SUB, 250)}
    fake.fail_next(fault, count=count, path_contains="after=")
    failed = poll(engine, fake)
    assert not failed.ok and failed.new_ids == [] and recorded_ids(engine) == before
    assert len(outbox_post_ids(engine)) == len(before)
    assert failed.pages == 1 and failed.front_page_rows == 0
    assert poll_rows(engine)[-1]["error"] == failed.error and "\n" not in failed.summary()
    retried = poll(engine, fake)
    assert retried.ok and set(retried.new_ids) == burst


@pytest.mark.parametrize(
    ("setup", "error_type"),
    [
        (lambda f: f.set_subreddit_state(SUB, "private"), "SubredditUnavailable"),
        (lambda f: f.set_subreddit_state(SUB, "quarantined"), "SubredditUnavailable"),
        (lambda f: f.set_subreddit_state(SUB, "banned"), "SubredditUnavailable"),
        (lambda f: f.set_subreddit_state(SUB, "nonexistent"), "SubredditUnavailable"),
        (lambda f: f.fail_next("403_blocked_html"), "RedditResponseError"),
        (lambda f: f.fail_next("200_html"), "RedditResponseError"),
        (lambda f: f.fail_next("malformed_json"), "RedditResponseError"),
        (lambda f: f.fail_next("wrong_shape"), "RedditResponseError"),
        (lambda f: f.fail_next("502", count=ATTEMPTS), "RedditUnavailable"),
    ],
    ids=["private", "quarantined", "banned", "nonexistent", "blocked", "html200", "malformed", "shape", "502"],
)
def test_each_error_gives_its_typed_one_line_error_and_records_nothing(
    engine: Engine, fake: FakeReddit, setup: Callable[[FakeReddit], None], error_type: str
):
    fake.add_posts(SUB, 30)
    setup(fake)
    result = poll(engine, fake)
    assert result.error is not None and result.error.startswith(f"{error_type}: ")
    summary = result.summary()
    assert summary.startswith(f"error: r/{SUB} poll failed") and "\n" not in summary
    assert recorded_ids(engine) == set() and outbox_post_ids(engine) == []
    [row] = poll_rows(engine)
    assert row["error"] == result.error and row["new_posts"] == 0 and row["finished_at"] is not None


def test_429_then_success_and_oauth_token_reused_across_polls(
    engine: Engine, fake_reddit_factory: Callable[..., FakeReddit]
):
    fake = fake_reddit_factory(client_id="cid", client_secret="csecret", ratelimit_budget=1_000_000)
    fake.add_posts(SUB, 40)
    fake.retry_after_s = 0
    fake.fail_next("429_html")
    client = make_client(fake, client_id="cid", client_secret="csecret")
    first = poll(engine, client)
    assert first.ok and len(first.new_ids) == 40 and first.requests == 1 + 2 + 1  # token, 429 + retry, hot
    for _ in range(2):
        assert poll(engine, client).ok
    assert fake.count_requests("/api/v1/access_token") == 1


def test_hostile_content_is_recorded_intact(engine: Engine, fake: FakeReddit):
    big = ("Long story \u202eRTL\u202c \U0001f3e5 <b>bold</b> & more. " * 3000)[:100_000]
    title = "<script>alert('x')</script> \u200fשלום\u200e \U0001f489\U0001f3fd nul\x00here &amp; </title>"
    odd = fake.add_post(SUB, title=title, selftext=big, author="rtl_\u202euser", is_self=True)
    surrogate = fake.add_post(SUB, title="half an emoji \ud83d here", selftext="x")
    result = poll(engine, fake)
    assert set(result.new_ids) == {odd["id"], surrogate["id"]}
    with engine.connect() as conn:
        rows = {r["id"]: r for r in conn.execute(sa.select(posts)).mappings()}
        payload = conn.execute(
            sa.select(event_outbox.c.payload).where(event_outbox.c.post_id == odd["id"])
        ).scalar_one()
    stored = rows[odd["id"]]
    assert stored["title"] == title.replace("\x00", "\ufffd")  # NUL -> U+FFFD, documented in posts.py
    assert stored["raw"]["selftext"] == big and len(stored["raw"]["selftext"]) == 100_000
    assert stored["author"] == "rtl_\u202euser"
    assert payload["event_properties"]["title"] == title.replace("\x00", "\ufffd")
    assert rows[surrogate["id"]]["title"] == "half an emoji \ufffd here"


def test_front_page_snapshot_keeps_rank_stickies_score_and_comments(engine: Engine, fake: FakeReddit):
    added = fake.add_posts(SUB, 130)
    for rank, post in enumerate(added[:40]):
        fake.update_post(post["id"], score=1000 - rank, num_comments=rank)
    fake.set_sticky(added[100]["id"], True)
    result = poll(engine, fake)
    assert result.front_page_rows == 101 and hot_requests(fake) == 1
    with engine.connect() as conn:
        rows = conn.execute(sa.select(front_page).order_by(front_page.c.rank)).mappings().all()
    assert len(rows) == 101 and len({r["snapshot_at"] for r in rows}) == 1
    assert (rows[0]["post_id"], rows[0]["stickied"]) == (added[100]["id"], True)
    assert [(r["post_id"], r["score"], r["num_comments"], r["stickied"]) for r in rows[1:4]] == [
        (added[i]["id"], 1000 - i, i, False) for i in range(3)
    ]


def test_dates_touched_are_the_utc_creation_dates_of_new_posts(engine: Engine, fake: FakeReddit):
    midnight = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    fake.add_post(SUB, created_utc=midnight - 5)
    fake.add_post(SUB, created_utc=midnight + 5)
    assert poll(engine, fake).dates_touched == ["2026-02-28", "2026-03-01"]
    fake.add_post(SUB, created_utc=midnight + 86400 * 2)
    assert poll(engine, fake).dates_touched == ["2026-03-03"]
    assert poll(engine, fake).dates_touched == []


# --- the command line, real processes ---------------------------------------------------------------


def cli_env(child_env: dict[str, str], fake: FakeReddit, subreddits: str = SUB) -> dict[str, str]:
    return {**child_env, "REDDIT_API_URL": fake.url, "REDDIT_WWW_URL": fake.url, "SUBREDDITS": subreddits,
            "REDDIT_USER_AGENT": UA}


def run_poll(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reddit_dagster.cli", "poll"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=90,
    )


def test_cli_poll_exit_codes_and_one_line_output(engine: Engine, fake: FakeReddit, child_env: dict[str, str]):
    fake.add_posts(SUB, 12)
    fake.add_posts("medicine", 5)
    ok = run_poll(cli_env(child_env, fake, f"{SUB},medicine"))
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"r/{SUB} poll: 12 new") and lines[1].startswith("r/medicine poll: 5 new")
    assert ok.stderr == ""

    fake.set_subreddit_state("medicine", "private")
    failed = run_poll(cli_env(child_env, fake, f"{SUB},medicine"))
    assert failed.returncode == 1
    assert failed.stdout.startswith(f"r/{SUB} poll: 0 new")
    [line] = failed.stderr.splitlines()
    assert line.startswith("error: r/medicine poll failed") and "private" in line and "SubredditUnavailable" in line
    assert len(recorded_ids(engine)) == 17


def test_three_concurrent_poll_processes_over_a_stream_of_bursts_record_every_post_once(
    engine: Engine, fake: FakeReddit, child_env: dict[str, str]
):
    rng = random.Random(5)
    env = cli_env(child_env, fake)
    fake.add_posts(SUB, 30)
    rounds = (250, 0, 120)
    for burst in rounds:
        fake.add_posts(SUB, burst)
        procs = [
            subprocess.Popen([sys.executable, "-m", "reddit_dagster.cli", "poll"], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        for _ in range(40):  # posts keep arriving while they walk (a bounded trickle)
            if all(proc.poll() is not None for proc in procs):
                break
            fake.add_posts(SUB, rng.randint(0, 3))
            try:
                procs[0].wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        for proc in procs:
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    final = run_poll(env)  # catches what arrived during the last round
    assert final.returncode == 0, final.stderr

    rows = poll_rows(engine)
    assert len(rows) == len(rounds) * 3 + 1
    assert not any(r["gap"] or r["error"] for r in rows)
    everything = live_ids(fake)
    assert fake.ever_listed == everything
    assert recorded_ids(engine) == everything
    outbox = outbox_post_ids(engine)
    assert len(outbox) == len(everything) and set(outbox) == everything
    # Each post was reported new by exactly one poll, whichever process won it.
    assert sum(r["new_posts"] for r in rows) == len(everything)


def test_cli_poll_with_wrong_oauth_credentials_fails_in_one_line_without_the_secret(
    engine: Engine, fake_reddit_factory: Callable[..., FakeReddit], child_env: dict[str, str]
):
    fake = fake_reddit_factory(client_id="cid", client_secret="right-secret", wrong_credentials_http_200=True)
    fake.add_posts(SUB, 4)
    env = {**cli_env(child_env, fake), "REDDIT_CLIENT_ID": "cid", "REDDIT_CLIENT_SECRET": "wrong-secret-value"}
    failed = run_poll(env)
    assert failed.returncode == 1 and failed.stdout == ""
    [line] = failed.stderr.splitlines()
    assert "RedditAuthError" in line and "HTTP 200" in line and "wrong-secret-value" not in line
    assert recorded_ids(engine) == set() and poll_rows(engine)[0]["error"].startswith("RedditAuthError")
    ok = run_poll({**env, "REDDIT_CLIENT_SECRET": "right-secret"})
    assert ok.returncode == 0, ok.stderr
    assert len(recorded_ids(engine)) == 4 and fake.count_requests("/api/v1/access_token") == 2
