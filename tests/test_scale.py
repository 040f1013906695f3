"""Per-subreddit partitions (scale.py), in process over real PostgreSQL and the fakes."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster.definitions import defs
from reddit_dagster.scale import POLL_BY_SUBREDDIT_JOB
from reddit_dagster.schema import event_outbox, poll_log
from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit
from tests.fixtures_dagster import SUBREDDIT

pytestmark = pytest.mark.timeout(120)

PROBE = """
import json
from reddit_dagster.definitions import defs
job = defs.resolve_job_def("poll_by_subreddit_job")
print(json.dumps({
    "partitions": job.partitions_def.get_partition_keys(),
    "executor": job.executor_def.name,
    "schedules": {s.name: s.default_status.value for s in defs.schedules},
}))
"""


def probe(child_env: dict[str, str], **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=child_env | env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_partitions_and_schedules_follow_the_environment(child_env: dict[str, str]) -> None:
    per_sub = probe(
        child_env, SUBREDDITS="healthcare, r/medicine,nursing,healthcare", POLL_MODE="per_subreddit",
        DAGSTER_EXECUTOR="celery",
    )
    assert per_sub["partitions"] == ["healthcare", "medicine", "nursing"]
    assert per_sub["executor"] == "celery_executor"
    assert per_sub["schedules"]["poll_by_subreddit_schedule"] == "RUNNING"
    assert per_sub["schedules"]["poll_schedule"] == "STOPPED"

    default = probe(child_env, SUBREDDITS="healthcare")
    assert default["partitions"] == ["healthcare"] and default["executor"] == "in_process"
    assert default["schedules"]["poll_by_subreddit_schedule"] == "STOPPED"
    assert default["schedules"]["poll_schedule"] == "RUNNING"


def test_a_subreddit_partition_run_polls_records_sends_and_reports(
    engine: Engine,
    dagster_instance: dg.DagsterInstance,
    pipeline_env: dict[str, str],
    fake_reddit: FakeReddit,
    fake_amplitude: FakeAmplitude,
) -> None:
    fake_reddit.add_posts(SUBREDDIT, 7)
    job = defs.resolve_job_def(POLL_BY_SUBREDDIT_JOB)
    first = job.execute_in_process(instance=dagster_instance, partition_key=SUBREDDIT)
    assert first.success
    [materialization] = [
        e.materialization for e in first.get_asset_materialization_events() if e.asset_key.path == ["subreddit_poll"]
    ]
    assert materialization.partition == SUBREDDIT
    meta = {key: value.value for key, value in materialization.metadata.items()}
    assert (meta["new"], meta["sent"], meta["pending"], meta["gap"]) == (7, 7, 0, False)
    checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
    assert checks == {"walk_reached_known_posts": True, "front_page_fresh": True}
    with engine.connect() as conn:
        logged = conn.execute(sa.select(poll_log).where(poll_log.c.run_id == first.run_id)).mappings().all()
        insert_ids = set(conn.scalars(sa.select(event_outbox.c.insert_id).where(event_outbox.c.status == "sent")))
    assert [(row["subreddit"], row["new_posts"], row["error"]) for row in logged] == [(SUBREDDIT, 7, None)]
    assert fake_amplitude.count_by_insert_id() == dict.fromkeys(insert_ids, 1) and len(insert_ids) == 7

    # Idle: two Reddit requests per subreddit and cycle (one /new, one /hot), nothing sent.
    before = len(fake_reddit.requests_log)
    idle = job.execute_in_process(instance=dagster_instance, partition_key=SUBREDDIT)
    assert idle.success and len(fake_reddit.requests_log) - before == 2
    assert len(fake_amplitude.stored_insert_ids()) == 7

    # A private subreddit fails its own run, with its own poll_log row.
    fake_reddit.set_subreddit_state(SUBREDDIT, "private")
    failed = job.execute_in_process(instance=dagster_instance, partition_key=SUBREDDIT, raise_on_error=False)
    assert not failed.success
    with engine.connect() as conn:
        error = conn.execute(sa.select(poll_log.c.error).where(poll_log.c.run_id == failed.run_id)).scalar_one()
    assert "private" in error
