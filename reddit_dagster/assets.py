"""The assets: a thin layer over ingest.poll_subreddits, ingest.reconcile and emit.emit_due.

Lineage: front_page, new_listing -> new_posts -> amplitude_events.

Partitions. `new_posts` is daily-partitioned by the post's UTC creation date, but a poll cannot know
in advance which days its new posts belong to, and the posts primary key (not Dagster) is the
dedupe guard. So (research/dagster.md §2):
- `new_listing` (unpartitioned, run by the 5-minute schedule) walks /new, records what is new,
  and logs a materialization of `new_posts` for each day its new posts belong to. The UI's
  partition view of `new_posts` therefore shows which days have recorded posts, and when.
- Materializing `new_posts` itself for a day or a range (one run per range: BackfillPolicy
  .single_run()) runs the deep reconciliation walk over Reddit's whole reachable listing for each
  subreddit and records whatever is missing, then reports the days' recorded / newly recorded
  counts. Emission follows the outbox, so a backfill over complete days records and sends nothing.
- `amplitude_events` drains the outbox; it depends on `new_listing` too, so the poll job runs
  poll -> record -> emit in order without `new_posts` being in that job.
"""


from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import dagster as dg
from sqlalchemy.engine import Engine

from reddit_dagster import alerts, logs, observe
from reddit_dagster.emit import emit_due
from reddit_dagster.ingest import PollResult, poll_subreddits, reconcile
from reddit_dagster.resources import PipelineResource
from reddit_dagster.store import pipeline_status

# Reddit's reachable /new listing (~1000 posts) reaches back months on a quiet subreddit; earlier
# days cannot be re-walked, so they have no partitions.
PARTITIONS_START = "2025-01-01"
# end_offset=1: today, the day in progress, is a partition too (new posts land in it).
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1, timezone="UTC")

FRONT_PAGE = dg.AssetKey("front_page")
NEW_LISTING = dg.AssetKey("new_listing")
NEW_POSTS = dg.AssetKey("new_posts")
AMPLITUDE_EVENTS = dg.AssetKey("amplitude_events")


def walk_metadata(results: Sequence[PollResult]) -> dict[str, Any]:
    """Counts of one or more walks, for materialization metadata."""
    headroom = [r.ratelimit_remaining for r in results if r.ratelimit_remaining is not None]
    return {
        "fetched": sum(r.fetched for r in results),
        "new": sum(len(r.new_ids) for r in results),
        "pages": sum(r.pages for r in results),
        "requests": sum(r.requests for r in results),
        "ratelimit_remaining": dg.MetadataValue.float(float(min(headroom))) if headroom else None,
        "gap": any(r.gap for r in results),
        "walks": dg.MetadataValue.md("\n".join(f"- {r.summary()}" for r in results) or "(none)"),
    }


def outbox_metadata(engine: Engine) -> dict[str, Any]:
    status = pipeline_status(engine)
    return {
        "posts_total": status["posts"],
        "pending": status["pending"],
        "sent_total": status["sent"],
        "dead": status["dead"],
        "oldest_pending_age_s": status["oldest_pending_age_s"],
    }


def _drop_none(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if value is not None}


def log_partitions_touched(
    context: dg.AssetExecutionContext, engine: Engine, new_ids: Sequence[str], *, skip: tuple[str, str] | None = None
) -> dict[str, int]:
    """Log a materialization of `new_posts` for each day that received newly recorded posts
    (days within `skip`, an inclusive range the run materializes itself, excepted).
    Returns day -> newly recorded posts, for every day touched."""
    touched = observe.days_of_posts(engine, new_ids)
    last_key = daily_partitions.get_last_partition_key()
    for day, count in sorted(touched.items()):
        if day < PARTITIONS_START or (last_key is not None and day > last_key):
            continue  # outside the partitioned range (very old, or dated in the future)
        if skip is not None and skip[0] <= day <= skip[1]:
            continue
        recorded = observe.posts_per_day(engine, date.fromisoformat(day), date.fromisoformat(day)).get(day, 0)
        context.log_event(
            dg.AssetMaterialization(
                asset_key=NEW_POSTS,
                partition=day,
                description="new posts of this day recorded by a walk",
                metadata={"new": count, "recorded": recorded, "run": context.run_id},
            )
        )
    return touched


def _one_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:300] if lines else "unknown error"


def _raise_if_failed(results: Sequence[PollResult], what: str) -> None:
    failed = [r for r in results if r.error]
    if failed:
        raise dg.Failure(
            description=f"{what} failed for {len(failed)} subreddit(s): "
            + "; ".join(f"r/{r.subreddit}: {_one_line(r.error)}" for r in failed),
            metadata=walk_metadata(results) | {"failed": [r.subreddit for r in failed]},
        )


@dg.multi_asset(
    name="poll_reddit",
    specs=[
        dg.AssetSpec(
            FRONT_PAGE,
            group_name="reddit",
            description="Snapshots of each subreddit's hot listing (rank, score, comments) for the dashboard.",
        ),
        dg.AssetSpec(
            NEW_LISTING,
            group_name="reddit",
            description="The /new walk down to already-recorded posts (plus an overlap margin); records "
            "every new post with its outbox row in one transaction.",
        ),
    ],
)
def poll_reddit(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> Iterator[dg.MaterializeResult]:
    """Walk /new and snapshot /hot for every subreddit; one /new and one /hot request when idle."""
    engine = pipeline.engine()
    settings = pipeline.settings()
    with logs.bound(run_id=context.run_id):
        results = poll_subreddits(engine, settings, run_id=context.run_id, kind="poll")
        alerts.check_and_notify(engine, alerts.webhook_url_of(settings), pending_warn_s=pipeline.pending_warn_s)
    yield dg.MaterializeResult(
        asset_key=FRONT_PAGE,
        metadata={"rows": sum(r.front_page_rows for r in results), "subreddits": len(results)},
    )
    touched = log_partitions_touched(context, engine, [i for r in results for i in r.new_ids])
    _raise_if_failed(results, "the /new walk")
    for result in results:
        if result.gap:
            context.log.warning(f"gap: {result.summary()}")
    yield dg.MaterializeResult(
        asset_key=NEW_LISTING,
        metadata=_drop_none(walk_metadata(results) | outbox_metadata(engine) | {"days_touched": sorted(touched)}),
    )


@dg.asset(
    key=NEW_POSTS,
    group_name="reddit",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[NEW_LISTING],
    description="Recorded posts by UTC creation day (the posts primary key is the dedupe guard). "
    "Materializing a day or a range re-walks Reddit's whole reachable /new listing and records any "
    "missing posts; days with nothing missing record and send nothing.",
)
def new_posts(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    first, last = context.partition_key_range.start, context.partition_key_range.end
    engine = pipeline.engine()
    settings = pipeline.settings()
    with logs.bound(run_id=context.run_id):
        results = [reconcile(engine, settings, sub, run_id=context.run_id) for sub in settings.subreddits]
        alerts.check_and_notify(engine, alerts.webhook_url_of(settings), pending_warn_s=pipeline.pending_warn_s)
    new_ids = [i for r in results for i in r.new_ids]
    # Days outside the requested range that the deep walk filled are logged like a poll's.
    log_partitions_touched(context, engine, new_ids, skip=(first, last))
    _raise_if_failed(results, "the reconciliation walk")
    first_day, last_day = date.fromisoformat(first), date.fromisoformat(last)
    recorded = observe.posts_per_day(engine, first_day, last_day)
    newly = observe.posts_per_day(engine, first_day, last_day, post_ids=new_ids)
    per_day = {day: {"recorded": recorded[day], "new": newly.get(day, 0)} for day in sorted(recorded)}
    return dg.MaterializeResult(
        metadata=_drop_none(
            walk_metadata(results)
            | {
                "days": f"{first}..{last}",
                "recorded": sum(recorded.values()),
                "new_in_days": sum(newly.values()),
                "per_day": dg.MetadataValue.json(per_day),
            }
        )
    )


@dg.asset(
    key=AMPLITUDE_EVENTS,
    group_name="amplitude",
    deps=[NEW_POSTS, NEW_LISTING],
    description="The outbox drained to Amplitude: one event per post, settled only on Amplitude's "
    "acknowledgement; insert_id dedupe makes resends harmless.",
)
def amplitude_events(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    engine = pipeline.engine()
    settings = pipeline.settings()
    with logs.bound(run_id=context.run_id):
        result = emit_due(engine, settings, owner=f"dagster-{context.run_id}")
        alerts.check_and_notify(engine, alerts.webhook_url_of(settings), pending_warn_s=pipeline.pending_warn_s)
    if result.skipped_reason:
        context.log.warning(f"nothing sent: {result.skipped_reason}")
    metadata = _drop_none(
        {
            "claimed": result.claimed,
            "sent": result.sent,
            "retried": result.retried,
            "dead_now": result.dead,
            "batches": result.batches,
            "skipped_reason": result.skipped_reason,
        }
        | outbox_metadata(engine)
    )
    if not result.ok:
        raise dg.Failure(description=f"emission failed: {result.summary()}", metadata=metadata)
    return dg.MaterializeResult(metadata=metadata)


ASSETS = [poll_reddit, new_posts, amplitude_events]
