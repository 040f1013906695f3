"""Scale-out: subreddits as a partition dimension, and where their steps run (Celery when configured).

- `subreddit_poll` is partitioned by subreddit: a StaticPartitionsDefinition built from SUBREDDITS
  when the definitions load, so adding a subreddit is an environment change and a reload. Each
  partition run walks one subreddit's /new, snapshots its /hot, records new posts with their
  outbox rows, writes its own poll_log row, reports its own metadata and check results, and then
  drains the outbox (emit_due: concurrent drains are safe, claims use FOR UPDATE SKIP LOCKED).
- `poll_by_subreddit_schedule` asks for one run per subreddit each tick. It is STOPPED unless
  POLL_MODE=per_subreddit, which in turn stops the default all-subreddits `poll_schedule`.
- DAGSTER_EXECUTOR=celery runs the job's steps on Celery workers (dagster-celery) through the broker
  in CELERY_BROKER_URL (default RabbitMQ on localhost), results via CELERY_BACKEND_URL (default
  rpc://), on queue CELERY_QUEUE (default "dagster"). Tasks are acknowledged late, so a worker
  that dies mid-step has its step redelivered to another worker; every step is idempotent.

Several processes polling at once should share the Reddit budget: set REDDIT_SHARED_LIMIT=1
(ratelimit.py). None of these variables is a secret; the broker URL is bound by name (EnvVar).
"""


import os
from typing import Any

import dagster as dg

from reddit_dagster.assets import _drop_none, log_partitions_touched, outbox_metadata, walk_metadata
from reddit_dagster.checks import check_front_page_fresh, check_walk_reached_known
from reddit_dagster.emit import emit_due
from reddit_dagster.ingest import poll_subreddit
from reddit_dagster.reddit import RedditClient
from reddit_dagster.resources import PipelineResource
from reddit_dagster.settings import Settings

SUBREDDIT_POLL = dg.AssetKey("subreddit_poll")
POLL_BY_SUBREDDIT_JOB = "poll_by_subreddit_job"
POLL_SUBREDDIT_TAG = "reddit_dagster/poll_subreddit"
PER_SUBREDDIT = "per_subreddit"
POLL_MODES = ("all", PER_SUBREDDIT)
DEFAULT_POLL_CRON = "*/5 * * * *"
DEFAULT_CELERY_BROKER = "pyamqp://guest@127.0.0.1:5672//"
DEFAULT_CELERY_BACKEND = "rpc://"
DEFAULT_CELERY_QUEUE = "dagster"


def poll_mode() -> str:
    """POLL_MODE: "all" (default: poll_job polls every subreddit in one run) or "per_subreddit"."""
    mode = os.environ.get("POLL_MODE", "").strip().lower() or "all"
    if mode not in POLL_MODES:
        raise ValueError(f"POLL_MODE must be one of {', '.join(POLL_MODES)}, got {mode!r}")
    return mode


def subreddit_names() -> list[str]:
    """SUBREDDITS as Settings parses it (default healthcare), without duplicates, in order."""
    raw = os.environ.get("SUBREDDITS", "").strip()
    names = Settings._split_subreddits(raw) if raw else Settings.model_fields["subreddits"].default
    return list(dict.fromkeys(names))


subreddit_partitions = dg.StaticPartitionsDefinition(subreddit_names())


def celery_config_source(queue: str) -> dict[str, Any]:
    """Celery settings the driver and the workers must agree on (workers read them from celery.yaml).

    Late acknowledgement: a task stays on the broker until its step is over, so the steps of a
    killed worker go to another worker instead of being lost (and leaving their runs waiting)."""
    return {
        "task_default_queue": queue,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
    }


def executor_from_env() -> dg.ExecutorDefinition:
    """DAGSTER_EXECUTOR: "in_process" (default) or "celery"."""
    choice = os.environ.get("DAGSTER_EXECUTOR", "").strip().lower() or "in_process"
    if choice == "in_process":
        return dg.in_process_executor
    if choice != "celery":
        raise ValueError(f"DAGSTER_EXECUTOR must be in_process or celery, got {choice!r}")
    from dagster_celery import celery_executor  # imported only when used: it loads Celery

    queue = os.environ.get("CELERY_QUEUE", "").strip() or DEFAULT_CELERY_QUEUE
    config: dict[str, Any] = {"config_source": celery_config_source(queue)}
    # By name, so a broker password never lands in the definitions snapshot or run storage.
    for key, name, default in (
        ("broker", "CELERY_BROKER_URL", DEFAULT_CELERY_BROKER),
        ("backend", "CELERY_BACKEND_URL", DEFAULT_CELERY_BACKEND),
    ):
        config[key] = {"env": name} if os.environ.get(name) else default
    return celery_executor.configured(config, name="celery_executor")


class SubredditPollConfig(dg.Config):
    # How long a claimed outbox row stays leased to this run; a killed run's rows are sent again
    # (same insert_id, deduplicated by Amplitude) once it expires.
    emit_lease_s: float = 120.0


@dg.asset(
    key=SUBREDDIT_POLL,
    group_name="reddit",
    partitions_def=subreddit_partitions,
    check_specs=[
        dg.AssetCheckSpec("walk_reached_known_posts", asset=SUBREDDIT_POLL),
        dg.AssetCheckSpec("front_page_fresh", asset=SUBREDDIT_POLL),
    ],
    description="One subreddit's poll (a partition per subreddit of SUBREDDITS): walk /new, snapshot "
    "/hot, record new posts with their outbox rows, then send due events.",
)
def subreddit_poll(
    context: dg.AssetExecutionContext, config: SubredditPollConfig, pipeline: PipelineResource
) -> dg.MaterializeResult:
    subreddit = context.partition_key
    engine = pipeline.engine()
    settings = pipeline.settings()
    client = RedditClient.from_settings(settings)
    try:
        result = poll_subreddit(
            engine, client, subreddit, overlap_margin=settings.overlap_margin, run_id=context.run_id
        )
    finally:
        client.close()
    touched = log_partitions_touched(context, engine, result.new_ids)
    if result.error:
        raise dg.Failure(description=result.summary(), metadata=walk_metadata([result]))
    if result.gap:
        context.log.warning(f"gap: {result.summary()}")
    emitted = emit_due(engine, settings, owner=f"dagster-{context.run_id}", lease_s=config.emit_lease_s)
    metadata = _drop_none(
        walk_metadata([result])
        | {"days_touched": sorted(touched), "sent": emitted.sent, "emit": emitted.summary()}
        | outbox_metadata(engine)
    )
    if not emitted.ok:
        raise dg.Failure(description=f"r/{subreddit}: recorded, but {emitted.summary()}", metadata=metadata)
    checks = [
        check_walk_reached_known(engine, [subreddit]),
        check_front_page_fresh(engine, [subreddit], pipeline.front_page_max_age_s),
    ]
    names = ["walk_reached_known_posts", "front_page_fresh"]
    check_results = [
        dg.AssetCheckResult(
            check_name=name, passed=c.passed, severity=c.severity, description=c.description, metadata=c.metadata
        )
        for name, c in zip(names, checks, strict=True)
    ]
    return dg.MaterializeResult(metadata=metadata, check_results=check_results)


poll_by_subreddit_job = dg.define_asset_job(
    POLL_BY_SUBREDDIT_JOB,
    selection=dg.AssetSelection.assets(SUBREDDIT_POLL),
    partitions_def=subreddit_partitions,
    executor_def=executor_from_env(),
    tags={POLL_SUBREDDIT_TAG: "true"},
    description="Poll one subreddit (the run's partition), record, send. DAGSTER_EXECUTOR=celery runs "
    "the step on a Celery worker.",
)


@dg.schedule(
    name="poll_by_subreddit_schedule",
    job=poll_by_subreddit_job,
    cron_schedule=os.environ.get("POLL_SCHEDULE_CRON", "").strip() or DEFAULT_POLL_CRON,
    execution_timezone="UTC",
    default_status=(
        dg.DefaultScheduleStatus.RUNNING if poll_mode() == PER_SUBREDDIT else dg.DefaultScheduleStatus.STOPPED
    ),
    description="One run per subreddit each tick (POLL_MODE=per_subreddit turns it on and poll_schedule off).",
)
def poll_by_subreddit_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
    return [
        dg.RunRequest(run_key=f"{tick}/{subreddit}", partition_key=subreddit)
        for subreddit in subreddit_partitions.get_partition_keys()
    ]


def poll_by_subreddit_job_def() -> dg.JobDefinition:
    """The resolved job, for dg.reconstructable (driving it from a script or a test)."""
    from reddit_dagster.definitions import defs

    return defs.resolve_job_def(POLL_BY_SUBREDDIT_JOB)


ASSETS = [subreddit_poll]
JOBS = [poll_by_subreddit_job]
SCHEDULES = [poll_by_subreddit_schedule]
