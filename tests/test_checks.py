"""Each asset check fails on the state it guards against and passes without it (real PostgreSQL)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster import checks
from reddit_dagster.posts import Post, parse_post
from reddit_dagster.resources import AmplitudeResource, PipelineResource, PostgresResource, RedditResource
from reddit_dagster.schema import event_outbox, posts
from reddit_dagster.store import PollRecord, record_new_posts, save_front_page, write_poll_log

pytestmark = pytest.mark.timeout(60)

SUBS = ["healthcare", "medicine"]


def make_post(n: int, subreddit: str = "healthcare") -> Post:
    return parse_post(
        {"kind": "t3", "data": {"id": f"c{n:05d}", "created_utc": time.time() - n, "title": f"t{n}",
                                "author": f"a{n}", "subreddit": subreddit}}
    )


def test_outbox_rows_pass_when_recorded_together(engine: Engine) -> None:
    record_new_posts(engine, [make_post(n) for n in range(5)])
    result = checks.check_outbox_rows(engine)
    assert result.passed
    assert result.metadata["posts_without_outbox"].value == 0


def test_outbox_rows_fail_for_a_post_without_its_row(engine: Engine) -> None:
    record_new_posts(engine, [make_post(n) for n in range(3)])
    with engine.begin() as conn:  # a writer that bypassed record_new_posts
        conn.execute(sa.insert(posts).values(id="orphan1", subreddit="healthcare", title="x",
                                             created_utc=datetime.now(UTC), permalink="/r/x", raw={}))
    result = checks.check_outbox_rows(engine)
    assert not result.passed
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["posts_without_outbox"].value == 1
    assert "orphan1" in str(result.metadata["sample"].value)


def test_dead_letters(engine: Engine) -> None:
    record_new_posts(engine, [make_post(n) for n in range(3)])
    assert checks.check_dead_letters(engine).passed
    with engine.begin() as conn:
        conn.execute(
            sa.update(event_outbox).where(event_outbox.c.post_id == "c00001")
            .values(status="dead", last_error="400 invalid field")
        )
    result = checks.check_dead_letters(engine)
    assert not result.passed
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["dead"].value == 1
    assert "400 invalid field" in str(result.metadata["sample"].value)


def _age_pending(engine: Engine, post_id: str, age: timedelta) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(event_outbox).where(event_outbox.c.post_id == post_id)
            .values(created_at=sa.func.now() - age)
        )


def test_pending_age_passes_for_fresh_events(engine: Engine) -> None:
    record_new_posts(engine, [make_post(n) for n in range(3)])
    result = checks.check_pending_age(engine, warn_s=3600, error_s=2 * 86400)
    assert result.passed
    assert result.metadata["oldest_pending_age_s"].value < 60


def test_pending_age_warns_then_errors_well_before_the_dedupe_window(engine: Engine) -> None:
    record_new_posts(engine, [make_post(n) for n in range(3)])
    _age_pending(engine, "c00000", timedelta(hours=2))
    warn = checks.check_pending_age(engine, warn_s=3600, error_s=2 * 86400)
    assert not warn.passed
    assert warn.severity == dg.AssetCheckSeverity.WARN
    assert warn.metadata["pending_over_warn"].value == 1

    _age_pending(engine, "c00001", timedelta(days=2, hours=1))
    error = checks.check_pending_age(engine, warn_s=3600, error_s=2 * 86400)
    assert not error.passed
    assert error.severity == dg.AssetCheckSeverity.ERROR
    assert error.metadata["pending_over_error"].value == 1
    assert error.metadata["pending_over_warn"].value == 2

    with engine.begin() as conn:  # once sent, old rows are no longer a risk
        conn.execute(sa.update(event_outbox).values(status="sent", sent_at=sa.func.now()))
    assert checks.check_pending_age(engine, warn_s=3600, error_s=2 * 86400).passed


def test_walk_gap(engine: Engine) -> None:
    now = datetime.now(UTC)
    write_poll_log(engine, PollRecord(subreddit="healthcare", started_at=now, reached_known=True))
    result = checks.check_walk_reached_known(engine, SUBS)
    assert result.passed  # a subreddit never walked is reported, not failed
    assert result.metadata["never_walked"].value == ["medicine"]

    write_poll_log(engine, PollRecord(subreddit="medicine", started_at=now, reached_known=False, gap=True))
    result = checks.check_walk_reached_known(engine, SUBS)
    assert not result.passed
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["gaps"].value == ["medicine"]

    write_poll_log(engine, PollRecord(subreddit="medicine", started_at=now, reached_known=True))
    assert checks.check_walk_reached_known(engine, SUBS).passed  # the latest walk counts


def test_front_page_freshness(engine: Engine) -> None:
    ranked = [make_post(n) for n in range(3)]
    save_front_page(engine, "healthcare", ranked, datetime.now(UTC))
    result = checks.check_front_page_fresh(engine, SUBS, max_age_s=1800)
    assert not result.passed  # r/medicine has no snapshot at all
    assert result.metadata["stale"].value == ["medicine"]

    save_front_page(engine, "medicine", ranked, datetime.now(UTC) - timedelta(hours=1))
    result = checks.check_front_page_fresh(engine, SUBS, max_age_s=1800)
    assert not result.passed
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["stale"].value == ["medicine"]

    save_front_page(engine, "medicine", ranked, datetime.now(UTC))
    assert checks.check_front_page_fresh(engine, SUBS, max_age_s=1800).passed


def test_checks_through_dagster(engine: Engine, libpq_database_url: str) -> None:
    """The Dagster-wrapped checks read the database the resource names, with its thresholds."""
    pipeline = PipelineResource(
        postgres=PostgresResource(database_url=libpq_database_url),
        reddit=RedditResource(subreddits="healthcare"),
        amplitude=AmplitudeResource(),
        pending_warn_s=60,
    )
    record_new_posts(engine, [make_post(n) for n in range(2)])
    assert checks.no_stale_pending_events(pipeline=pipeline).passed
    assert checks.every_post_has_outbox_row(pipeline=pipeline).passed
    assert not checks.front_page_fresh(pipeline=pipeline).passed
    _age_pending(engine, "c00000", timedelta(minutes=5))
    stale = checks.no_stale_pending_events(pipeline=pipeline)
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.WARN
    with engine.begin() as conn:
        conn.execute(sa.update(event_outbox).values(status="dead", last_error="rejected"))
    assert not checks.no_dead_letters(pipeline=pipeline).passed
