"""The Definitions load and have the shape DESIGN §5 describes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from reddit_dagster.definitions import defs
from reddit_dagster.resources import pipeline_from_env

pytestmark = pytest.mark.timeout(120)


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys == {"front_page", "new_listing", "new_posts", "amplitude_events", "subreddit_poll"}
    assert {job.name for job in defs.resolve_all_job_defs()} >= {"poll_job", "emit_job", "reconcile_job"}


def test_lineage() -> None:
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {key.to_user_string() for key in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("new_posts") == {"new_listing"}
    assert parents("amplitude_events") == {"new_posts", "new_listing"}
    new_posts = graph.get(dg.AssetKey("new_posts"))
    assert isinstance(new_posts.partitions_def, dg.DailyPartitionsDefinition)
    assert new_posts.backfill_policy == dg.BackfillPolicy.single_run()


def test_checks_cover_the_design() -> None:
    checks = {(key.asset_key.to_user_string(), key.name) for key in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {
        ("new_listing", "every_post_has_outbox_row"),
        ("new_listing", "walk_reached_known_posts"),
        ("amplitude_events", "no_dead_letters"),
        ("amplitude_events", "no_stale_pending_events"),
        ("front_page", "front_page_fresh"),
        ("subreddit_poll", "walk_reached_known_posts"),
        ("subreddit_poll", "front_page_fresh"),
    }


def test_schedules_and_sensors_run_by_default() -> None:
    poll = defs.resolve_schedule_def("poll_schedule")
    assert poll.job_name == "poll_job"
    assert poll.execution_timezone == "UTC"
    assert poll.default_status == dg.DefaultScheduleStatus.RUNNING
    assert poll.cron_schedule == "*/5 * * * *"  # POLL_SCHEDULE_CRON unset in tests
    assert defs.resolve_job_def("poll_job").tags["reddit_dagster/poll"] == "true"
    for name in ("emit_sensor", "run_failure_sensor", "run_success_sensor"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING


def test_schedule_and_sensor_interval_from_environment(child_env: dict[str, str]) -> None:
    code = (
        "import json; from reddit_dagster.definitions import defs; "
        "print(json.dumps([defs.resolve_schedule_def('poll_schedule').cron_schedule, "
        "defs.resolve_sensor_def('emit_sensor').minimum_interval_seconds]))"
    )
    env = child_env | {"POLL_SCHEDULE_CRON": "* * * * *", "EMIT_SENSOR_INTERVAL_S": "5"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["* * * * *", 5]

    bad = subprocess.run(
        [sys.executable, "-c", code], env=child_env | {"EMIT_SENSOR_INTERVAL_S": "soon"},
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode != 0
    assert "EMIT_SENSOR_INTERVAL_S must be a whole number of seconds, got 'soon'" in bad.stderr


def test_resources_bind_environment_variables_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set variables become EnvVar bindings (the UI shows the name, Dagster resolves the value in
    the run); unset ones stay None and Settings applies its defaults."""
    monkeypatch.setenv("REDDIT_CLIENT_SECRET", "s3cret-binding-value")
    monkeypatch.delenv("AMPLITUDE_API_KEY", raising=False)
    pipeline = pipeline_from_env()
    assert pipeline.reddit.client_secret == dg.EnvVar("REDDIT_CLIENT_SECRET")
    assert pipeline.amplitude.api_key is None
    assert "s3cret-binding-value" not in repr(pipeline)
    assert os.environ["REDDIT_CLIENT_SECRET"] == "s3cret-binding-value"


def test_ui_snapshot_names_secret_variables_but_holds_no_values(child_env: dict[str, str]) -> None:
    """The repository snapshot is what the code server hands the UI; plain strings would be shown in
    full (research/dagster.md §7). Uses Dagster's internal snapshot API: it is what the UI reads."""
    code = (
        "from dagster._core.remote_representation.external_data import RepositorySnap\n"
        "from dagster._serdes import serialize_value\n"
        "from reddit_dagster.definitions import defs\n"
        "print(serialize_value(RepositorySnap.from_def(defs.get_repository_def())))\n"
    )
    secrets = {"REDDIT_CLIENT_SECRET": "snapshot-secret-8hQ2", "AMPLITUDE_API_KEY": "snapshot-key-3vX9"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env | secrets, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REDDIT_CLIENT_SECRET" in out.stdout and "AMPLITUDE_API_KEY" in out.stdout
    assert not [value for value in secrets.values() if value in out.stdout + out.stderr]
