"""Asset checks. Each is a plain function of (engine, ...) returning an AssetCheckResult, wrapped
for Dagster below; none is blocking, so a failed check is loud in the UI but never stops emission.
"""


from collections.abc import Sequence

import dagster as dg
from sqlalchemy.engine import Engine

from reddit_dagster import observe
from reddit_dagster.assets import AMPLITUDE_EVENTS, FRONT_PAGE, NEW_LISTING
from reddit_dagster.resources import PipelineResource

WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR


def check_outbox_rows(engine: Engine) -> dg.AssetCheckResult:
    """Every recorded post has its outbox row (the record transaction writes both or neither)."""
    missing, sample = observe.posts_without_outbox(engine)
    return dg.AssetCheckResult(
        passed=missing == 0,
        severity=ERROR,
        description=None if missing == 0 else f"{missing} recorded post(s) have no outbox row",
        metadata={"posts_without_outbox": missing, "sample": sample},
    )


def check_dead_letters(engine: Engine) -> dg.AssetCheckResult:
    """No event was rejected for good (a dead letter needs an operator)."""
    count, sample = observe.dead_letters(engine)
    return dg.AssetCheckResult(
        passed=count == 0,
        severity=ERROR,
        description=None if count == 0 else f"{count} event(s) are dead letters: Amplitude rejected them",
        metadata={"dead": count, "sample": sample},
    )


def check_pending_age(engine: Engine, warn_s: float, error_s: float) -> dg.AssetCheckResult:
    """No event pending longer than warn_s (WARN); ERROR past error_s, days before Amplitude's
    7-day insert_id dedupe window ends and a resend could duplicate an event that did land."""
    over_warn, oldest = observe.pending_ages(engine, warn_s)
    over_error, _ = observe.pending_ages(engine, error_s)
    metadata = {
        "pending_over_warn": over_warn,
        "pending_over_error": over_error,
        "oldest_pending_age_s": dg.MetadataValue.float(round(oldest, 1)) if oldest is not None else None,
        "warn_after_s": warn_s,
        "error_after_s": error_s,
    }
    metadata = {key: value for key, value in metadata.items() if value is not None}
    if over_error:
        return dg.AssetCheckResult(
            passed=False,
            severity=ERROR,
            description=f"{over_error} event(s) pending for over {error_s / 3600:g} h: send them before the "
            "7-day dedupe window ends",
            metadata=metadata,
        )
    return dg.AssetCheckResult(
        passed=over_warn == 0,
        severity=WARN,
        description=None if over_warn == 0 else f"{over_warn} event(s) pending for over {warn_s / 3600:g} h",
        metadata=metadata,
    )


def check_walk_reached_known(engine: Engine, subreddits: Sequence[str]) -> dg.AssetCheckResult:
    """The latest walk of each subreddit met already-recorded posts: no gap (posts possibly lost
    between the listing's reachable end and what was recorded before)."""
    walks = observe.last_walks(engine, subreddits)
    gaps = sorted(sub for sub, walk in walks.items() if walk is not None and walk["gap"])
    never = sorted(sub for sub, walk in walks.items() if walk is None)
    summary = {
        sub: None if walk is None else {
            "kind": walk["kind"],
            "started_at": walk["started_at"].isoformat(),
            "reached_known": walk["reached_known"],
            "gap": walk["gap"],
            "error": walk["error"],
        }
        for sub, walk in walks.items()
    }
    return dg.AssetCheckResult(
        passed=not gaps,
        severity=ERROR,
        description="gap in " + ", ".join(f"r/{sub}" for sub in gaps) + ": the walk reached the listing's end "
        "without meeting a recorded post" if gaps else None,
        metadata={"gaps": gaps, "never_walked": never, "last_walks": dg.MetadataValue.json(summary)},
    )


def check_front_page_fresh(engine: Engine, subreddits: Sequence[str], max_age_s: float) -> dg.AssetCheckResult:
    """Every subreddit's front page was snapshotted within max_age_s."""
    ages = observe.front_page_ages(engine, subreddits)
    stale = sorted(sub for sub, age in ages.items() if age is None or age > max_age_s)
    return dg.AssetCheckResult(
        passed=not stale,
        severity=WARN,
        description=None if not stale else "front page older than "
        f"{max_age_s / 60:g} min (or missing) for " + ", ".join(f"r/{sub}" for sub in stale),
        metadata={
            "stale": stale,
            "max_age_s": max_age_s,
            "age_s": dg.MetadataValue.json({sub: None if age is None else round(age, 1) for sub, age in ages.items()}),
        },
    )


@dg.asset_check(asset=NEW_LISTING, name="every_post_has_outbox_row", blocking=False)
def every_post_has_outbox_row(pipeline: PipelineResource) -> dg.AssetCheckResult:
    return check_outbox_rows(pipeline.engine())


@dg.asset_check(asset=NEW_LISTING, name="walk_reached_known_posts", blocking=False)
def walk_reached_known_posts(pipeline: PipelineResource) -> dg.AssetCheckResult:
    return check_walk_reached_known(pipeline.engine(), pipeline.settings().subreddits)


@dg.asset_check(asset=AMPLITUDE_EVENTS, name="no_dead_letters", blocking=False)
def no_dead_letters(pipeline: PipelineResource) -> dg.AssetCheckResult:
    return check_dead_letters(pipeline.engine())


@dg.asset_check(asset=AMPLITUDE_EVENTS, name="no_stale_pending_events", blocking=False)
def no_stale_pending_events(pipeline: PipelineResource) -> dg.AssetCheckResult:
    return check_pending_age(pipeline.engine(), pipeline.pending_warn_s, pipeline.pending_error_s)


@dg.asset_check(asset=FRONT_PAGE, name="front_page_fresh", blocking=False)
def front_page_fresh(pipeline: PipelineResource) -> dg.AssetCheckResult:
    return check_front_page_fresh(pipeline.engine(), pipeline.settings().subreddits, pipeline.front_page_max_age_s)


CHECKS = [
    every_post_has_outbox_row,
    walk_reached_known_posts,
    no_dead_letters,
    no_stale_pending_events,
    front_page_fresh,
]
