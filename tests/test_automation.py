"""Schedules and sensors, evaluated against an instance on PostgreSQL and the real database."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster import automation
from reddit_dagster.definitions import defs
from reddit_dagster.posts import parse_post
from reddit_dagster.schema import event_outbox, incidents, poll_log
from reddit_dagster.store import open_incident, record_new_posts

# Fixtures shared with the other Dagster tests (assigned, so pytest finds them in this module).

pytestmark = pytest.mark.timeout(120)


def _record(engine: Engine, n: int) -> None:
    record_new_posts(
        engine,
        [parse_post({"id": f"s{i:04d}", "created_utc": time.time() - i, "title": "t", "author": f"au{i}",
                     "subreddit": "healthcare"}) for i in range(n)],
    )


def _sensor_tick(
    sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult | object:
    resources = {"pipeline": defs.resources["pipeline"]}  # as bound in definitions.py
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=resources) as context:
        return sensor.evaluate_tick(context)


def test_poll_schedule_requests_the_poll_job(dagster_instance: dg.DagsterInstance) -> None:
    schedule = defs.resolve_schedule_def("poll_schedule")
    assert schedule.job_name == "poll_job"
    with dg.build_schedule_context(instance=dagster_instance, repository_def=defs.get_repository_def()) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert requests and len(requests) == 1


def test_reconcile_schedule_targets_yesterday(dagster_instance: dg.DagsterInstance) -> None:
    schedule = defs.resolve_schedule_def("reconcile_schedule")
    tick_at = datetime(2026, 12, 2, 3, 17, tzinfo=UTC)
    with dg.build_schedule_context(
        instance=dagster_instance, scheduled_execution_time=tick_at, repository_def=defs.get_repository_def()
    ) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2026-12-01"]


def test_emit_sensor(
    engine: Engine, dagster_instance: dg.DagsterInstance, pipeline_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sensor = defs.resolve_sensor_def("emit_sensor")

    nothing = _sensor_tick(sensor, dagster_instance)
    assert not nothing.run_requests and "no due outbox rows" in nothing.skip_message

    _record(engine, 3)
    due = _sensor_tick(sensor, dagster_instance)
    assert len(due.run_requests) == 1
    assert due.run_requests[0].tags["reddit_dagster/due_rows"] == "3"

    # Rows in backoff are not due yet.
    with engine.begin() as conn:
        conn.execute(sa.update(event_outbox).values(next_attempt_at=sa.func.now() + sa.text("interval '1 hour'")))
    assert not _sensor_tick(sensor, dagster_instance).run_requests
    with engine.begin() as conn:
        conn.execute(sa.update(event_outbox).values(next_attempt_at=sa.func.now()))

    # A run that emits is in progress: do not start another.
    run = dagster_instance.create_run_for_job(
        job_def=defs.resolve_job_def("emit_job"), run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED
    )
    try:
        busy = _sensor_tick(sensor, dagster_instance)
        assert not busy.run_requests and "is emitting" in busy.skip_message
    finally:
        dagster_instance.delete_run(run.run_id)
    assert _sensor_tick(sensor, dagster_instance).run_requests

    # A rejected key: relaunching every tick would only fail again.
    open_incident(engine, automation.KEY_REJECTED_INCIDENT, "amplitude", "Invalid API Key")
    rejected = _sensor_tick(sensor, dagster_instance)
    assert not rejected.run_requests and "rejected" in rejected.skip_message

    monkeypatch.delenv("AMPLITUDE_API_KEY")
    no_key = _sensor_tick(sensor, dagster_instance)
    assert not no_key.run_requests and "AMPLITUDE_API_KEY" in no_key.skip_message


def test_run_failure_sensor_records_incident_and_failed_poll(
    engine: Engine, dagster_instance: dg.DagsterInstance, pipeline_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    failure_sensor = defs.resolve_sensor_def("run_failure_sensor")
    success_sensor = defs.resolve_sensor_def("run_success_sensor")
    # First ticks only place the cursors at "now".
    failure_cursor = _sensor_tick(failure_sensor, dagster_instance).cursor
    success_cursor = _sensor_tick(success_sensor, dagster_instance).cursor

    # A poll run that dies before any walk is logged: the database is unreachable for the run.
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    failed = defs.resolve_job_def("poll_job").execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert not failed.success
    monkeypatch.setenv("DATABASE_URL", pipeline_env["DATABASE_URL"])

    failure_cursor = _sensor_tick(failure_sensor, dagster_instance, failure_cursor).cursor
    with engine.connect() as conn:
        opened = conn.execute(sa.select(incidents).where(incidents.c.resolved_at.is_(None))).mappings().all()
        failed_polls = conn.execute(sa.select(poll_log).where(poll_log.c.run_id == failed.run_id)).mappings().all()
    assert [(i["kind"], i["key"], i["run_id"]) for i in opened] == [("run_failure", "poll_job", failed.run_id)]
    assert "cannot reach PostgreSQL" in opened[0]["message"]
    assert [(p["subreddit"], p["error"] is not None) for p in failed_polls] == [("healthcare", True)]

    # The next successful poll closes the incident.
    ok = defs.resolve_job_def("poll_job").execute_in_process(instance=dagster_instance)
    assert ok.success
    _sensor_tick(success_sensor, dagster_instance, success_cursor)
    with engine.connect() as conn:
        still_open = conn.execute(
            sa.select(sa.func.count()).where(incidents.c.kind == "run_failure", incidents.c.resolved_at.is_(None))
        ).scalar_one()
    assert still_open == 0
