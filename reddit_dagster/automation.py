"""Jobs, schedules and sensors.

- poll_job (tag reddit_dagster/poll; dagster.yaml lets one run at a time, as an efficiency
  measure only): poll -> record -> emit, every 5 minutes by poll_schedule (POLL_SCHEDULE_CRON).
- emit_job (tag reddit_dagster/emit): drains the outbox; emit_sensor launches it when due rows
  exist and no emitting run is in progress, so retries do not wait for the next poll.
- reconcile_job: the daily deep walk (materializes yesterday's `new_posts` partition).
- run_failure_sensor records every failed run as an incident (the dashboard lists them) and a
  failed poll in poll_log; run_success_sensor closes the incident when the job next succeeds.
- alert_sensor opens an incident while events stay pending past the warning threshold and posts
  every open incident once to ALERT_WEBHOOK_URL (alerts.py); the run-failure sensor and the assets
  also post right away.

Schedule and interval settings are read when the definitions load; they are not secrets.
"""


import os
from datetime import UTC, datetime

import dagster as dg
from sqlalchemy.engine import Engine

from reddit_dagster import alerts, logs, observe
from reddit_dagster.assets import AMPLITUDE_EVENTS, FRONT_PAGE, NEW_LISTING, NEW_POSTS, daily_partitions
from reddit_dagster.resources import PipelineResource
from reddit_dagster.scale import PER_SUBREDDIT, POLL_BY_SUBREDDIT_JOB, poll_mode
from reddit_dagster.store import PollRecord, open_incident, resolve_incidents, write_poll_log

POLL_TAG = "reddit_dagster/poll"
EMIT_TAG = "reddit_dagster/emit"
DEFAULT_POLL_CRON = "*/5 * * * *"
DEFAULT_EMIT_SENSOR_INTERVAL_S = 30
DEFAULT_ALERT_SENSOR_INTERVAL_S = 60
RUN_FAILURE_INCIDENT = "run_failure"
KEY_REJECTED_INCIDENT = "amplitude_key_rejected"  # opened and resolved by emit.emit_due
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of seconds, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


poll_job = dg.define_asset_job(
    "poll_job",
    selection=dg.AssetSelection.assets(FRONT_PAGE, NEW_LISTING, AMPLITUDE_EVENTS),
    description="Walk /new and snapshot /hot, record new posts with their outbox rows, then send.",
    tags={POLL_TAG: "true"},
)

emit_job = dg.define_asset_job(
    "emit_job",
    selection=dg.AssetSelection.assets(AMPLITUDE_EVENTS),
    description="Send every due outbox row to Amplitude.",
    tags={EMIT_TAG: "true"},
)

reconcile_job = dg.define_asset_job(
    "reconcile_job",
    selection=dg.AssetSelection.assets(NEW_POSTS),
    partitions_def=daily_partitions,
    description="Deep walk of the reachable /new listing; records any post the polls missed.",
)

poll_schedule = dg.ScheduleDefinition(
    name="poll_schedule",
    job=poll_job,
    cron_schedule=os.environ.get("POLL_SCHEDULE_CRON", "").strip() or DEFAULT_POLL_CRON,
    execution_timezone="UTC",
    # POLL_MODE=per_subreddit hands polling to scale.poll_by_subreddit_schedule instead.
    default_status=(
        dg.DefaultScheduleStatus.STOPPED if poll_mode() == PER_SUBREDDIT else dg.DefaultScheduleStatus.RUNNING
    ),
    description="The poll path end to end; cheap when nothing is new (one /new and one /hot request).",
)


@dg.schedule(
    name="reconcile_schedule",
    job=reconcile_job,
    cron_schedule="17 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily deep walk: repairs late mod approvals further down the listing than polls look.",
)
def reconcile_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    scheduled = context.scheduled_execution_time or datetime.now(UTC)
    yesterday = daily_partitions.get_prev_partition_window(scheduled.astimezone(UTC))
    key = yesterday.start.strftime("%Y-%m-%d") if yesterday else daily_partitions.get_first_partition_key()
    return dg.RunRequest(run_key=key, partition_key=key)


@dg.sensor(
    name="emit_sensor",
    job=emit_job,
    minimum_interval_seconds=_env_int("EMIT_SENSOR_INTERVAL_S", DEFAULT_EMIT_SENSOR_INTERVAL_S),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches an emission run when due outbox rows exist and no run is emitting already.",
)
def emit_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.RunRequest | dg.SkipReason:
    settings = pipeline.settings()
    if settings.amplitude_api_key is None:
        return dg.SkipReason("AMPLITUDE_API_KEY is not set: events stay pending until it is")
    busy = context.instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS), limit=100)
    emitting = [r for r in busy if r.dagster_run.job_name in (emit_job.name, poll_job.name)]
    if emitting:
        run = emitting[0].dagster_run
        return dg.SkipReason(f"run {run.run_id[:8]} ({run.job_name}) is emitting")
    with pipeline.short_lived_engine() as engine:
        if observe.incident_open(engine, KEY_REJECTED_INCIDENT):
            # Relaunching every tick would only fail again; the poll job keeps trying every 5 minutes
            # and its first acknowledged send closes the incident.
            return dg.SkipReason("Amplitude rejected the API key (open incident); the poll job keeps retrying")
        due = observe.due_outbox_rows(engine)
    if not due:
        return dg.SkipReason("no due outbox rows")
    return dg.RunRequest(tags={"reddit_dagster/due_rows": str(due)})


@dg.run_failure_sensor(
    name="run_failure_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=_env_int("RUN_STATUS_SENSOR_INTERVAL_S", DEFAULT_EMIT_SENSOR_INTERVAL_S),
    description="Records each failed run as an incident (and a failed poll in poll_log) for the dashboard.",
)
def run_failure_sensor(context: dg.RunFailureSensorContext, pipeline: PipelineResource) -> None:
    run = context.dagster_run
    message = f"{run.job_name} run {run.run_id} failed: {failure_reason(context)}"
    settings = pipeline.settings()
    with pipeline.short_lived_engine() as engine, logs.bound(run_id=run.run_id):
        open_incident(engine, RUN_FAILURE_INCIDENT, run.job_name, message, run.run_id)
        if run.job_name == poll_job.name:
            record_failed_poll(engine, settings.subreddits, run.run_id, message, context.instance)
        elif run.job_name == POLL_BY_SUBREDDIT_JOB and run.tags.get("dagster/partition"):
            record_failed_poll(engine, [run.tags["dagster/partition"]], run.run_id, message, context.instance)
        alerts.check_and_notify(engine, alerts.webhook_url_of(settings), pending_warn_s=pipeline.pending_warn_s)


def failure_reason(context: dg.RunFailureSensorContext) -> str:
    """The first failed step's own error (the user exception, not Dagster's wrapper), one line."""
    reasons = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None and error.cause is not None and "DagsterExecutionStepExecutionError" in error.cls_name:
            error = error.cause
        if error is not None:
            reasons.append(f"{event.step_key}: {error.message.strip().splitlines()[0]}")
    if not reasons:
        reasons.append(context.failure_event.message or "run failed")
    return "; ".join(reasons)[:1000]


def record_failed_poll(
    engine: Engine, subreddits: list[str], run_id: str, message: str, instance: dg.DagsterInstance
) -> int:
    """A poll run that died before logging its walk (killed, database error, bug) still appears in
    poll_log as a failed poll; walks that logged themselves are left as they are."""
    logged = {walk["subreddit"] for walk in observe.walks_of_run(engine, run_id)}
    record = instance.get_run_record_by_id(run_id)
    started = datetime.fromtimestamp(record.start_time, UTC) if record and record.start_time else datetime.now(UTC)
    missing = [sub for sub in subreddits if sub not in logged]
    for subreddit in missing:
        write_poll_log(engine, PollRecord(subreddit=subreddit, started_at=started, error=message, run_id=run_id))
    return len(missing)


@dg.run_status_sensor(
    name="run_success_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=_env_int("RUN_STATUS_SENSOR_INTERVAL_S", DEFAULT_EMIT_SENSOR_INTERVAL_S),
    description="Closes a job's open run-failure incident when the job succeeds again.",
)
def run_success_sensor(context: dg.RunStatusSensorContext, pipeline: PipelineResource) -> None:
    with pipeline.short_lived_engine() as engine:
        resolve_incidents(engine, RUN_FAILURE_INCIDENT, context.dagster_run.job_name)


@dg.sensor(
    name="alert_sensor",
    minimum_interval_seconds=_env_int("ALERT_SENSOR_INTERVAL_S", DEFAULT_ALERT_SENSOR_INTERVAL_S),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Opens an incident while events stay pending past the warning threshold, and posts each "
    "open incident once to ALERT_WEBHOOK_URL (undelivered ones are retried on the next tick).",
)
def alert_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SkipReason:
    settings = pipeline.settings()
    with pipeline.short_lived_engine() as engine:
        stale = alerts.open_stale_pending_incident(engine, pipeline.pending_warn_s)
        result = alerts.notify_open_incidents(engine, alerts.webhook_url_of(settings))
    note = "; events pending past the warning threshold" if stale else ""
    return dg.SkipReason(result.summary() + note)


JOBS = [poll_job, emit_job, reconcile_job]
SCHEDULES = [poll_schedule, reconcile_schedule]
SENSORS = [emit_sensor, run_failure_sensor, run_success_sensor, alert_sensor]
