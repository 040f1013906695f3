"""The Dagster layer end to end, over real PostgreSQL (pipeline and Dagster storage), the fake Reddit
and the fake Amplitude on 127.0.0.1: job runs and their metadata, secrets, a CLI backfill while
the poll path runs, and `dagster dev` with its daemon firing the schedule and the sensor."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from reddit_dagster import db
from reddit_dagster.assets import ASSETS
from reddit_dagster.automation import JOBS
from reddit_dagster.checks import CHECKS
from reddit_dagster.definitions import defs
from reddit_dagster.ingest import poll_subreddits
from reddit_dagster.resources import pipeline_from_env
from reddit_dagster.schema import event_outbox, poll_log, posts
from reddit_dagster.settings import Settings, project_root
from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit
from tests.fixtures_dagster import SUBREDDIT, files_containing, table_rows_containing

# Fixtures shared with the other Dagster tests (assigned, so pytest finds them in this module).

pytestmark = pytest.mark.timeout(240)

DAGSTER = str(Path(sys.executable).parent / "dagster")
REDDIT_SECRET = "rs-7f3kQ9zXw2PcL8vN"
AMPLITUDE_SECRET = "ak-Yb4tH6mJ1qR9sE2d"


def day(offset: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=offset)).isoformat()


def seed_days(fake: FakeReddit, per_day: int, days: int = 3) -> None:
    """per_day posts on each of the last `days` UTC days, oldest first, ending before now."""
    now = time.time()
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    for back in range(days - 1, -1, -1):
        start = midnight - back * 86400
        end = min(start + 86400, now) - 1
        for i in range(per_day):
            fake.add_post(SUBREDDIT, created_utc=float(int(start + (end - start) * (i + 0.5) / per_day)))


def materializations(result: dg.ExecuteInProcessResult, key: str) -> list[dg.AssetMaterialization]:
    return [e.materialization for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]


def metadata(materialization: dg.AssetMaterialization) -> dict[str, Any]:
    return {key: value.value for key, value in materialization.metadata.items()}


def outbox_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(event_outbox.c.status, sa.func.count()).group_by(event_outbox.c.status))
        return dict(rows.all())


def assert_exactly_once(engine: Engine, fake_reddit: FakeReddit, fake_amplitude: FakeAmplitude) -> None:
    """Every post Reddit listed is recorded once and arrived at Amplitude exactly once."""
    listed = {post["id"] for post in fake_reddit.posts(SUBREDDIT)}
    with engine.connect() as conn:
        recorded = set(conn.scalars(sa.select(posts.c.id)))
        insert_ids = dict(conn.execute(sa.select(event_outbox.c.post_id, event_outbox.c.insert_id)).all())
    assert recorded == listed
    counts = fake_amplitude.count_by_insert_id()
    assert set(counts) == set(insert_ids.values())
    assert set(counts.values()) == {1}
    assert fake_amplitude.deduped == 0  # nothing was even sent twice
    assert outbox_counts(engine) == {"sent": len(listed)}


def test_poll_job_records_emits_and_reports(
    engine: Engine,
    dagster_instance: dg.DagsterInstance,
    pipeline_env: dict[str, str],
    fake_reddit: FakeReddit,
    fake_amplitude: FakeAmplitude,
) -> None:
    seed_days(fake_reddit, per_day=4)
    poll_job = defs.resolve_job_def("poll_job")

    first = poll_job.execute_in_process(instance=dagster_instance)
    assert first.success
    listing = metadata(materializations(first, "new_listing")[0])
    assert listing["new"] == 12 and listing["fetched"] >= 12 and listing["pages"] >= 1
    assert listing["ratelimit_remaining"] > 0 and listing["gap"] is False
    events = metadata(materializations(first, "amplitude_events")[0])
    assert (events["sent"], events["pending"], events["dead"], events["sent_total"]) == (12, 0, 0, 12)
    assert metadata(materializations(first, "front_page")[0])["rows"] == 12
    # The poll logged one materialization per day its new posts belong to.
    per_day = {m.partition: metadata(m)["new"] for m in materializations(first, "new_posts")}
    assert per_day == {day(-2): 4, day(-1): 4, day(0): 4}
    assert dagster_instance.get_materialized_partitions(dg.AssetKey("new_posts")) >= {day(-2), day(-1), day(0)}
    evaluations = first.get_asset_check_evaluations()
    assert len(evaluations) == 5 and all(e.passed for e in evaluations)
    assert_exactly_once(engine, fake_reddit, fake_amplitude)

    # Idle poll: one /new and one /hot request, nothing new, nothing sent.
    new_before, hot_before = fake_reddit.count_requests("/new"), fake_reddit.count_requests("/hot")
    idle = poll_job.execute_in_process(instance=dagster_instance)
    assert idle.success
    assert (fake_reddit.count_requests("/new") - new_before, fake_reddit.count_requests("/hot") - hot_before) == (1, 1)
    assert metadata(materializations(idle, "new_listing")[0])["new"] == 0
    assert metadata(materializations(idle, "amplitude_events")[0])["sent"] == 0
    assert not materializations(idle, "new_posts")
    assert len(fake_amplitude.stored_insert_ids()) == 12


def test_secrets_never_reach_dagster_storage_or_logs(
    engine: Engine,
    dagster_instance: dg.DagsterInstance,
    dagster_storage_url: URL,
    database_url: URL,
    libpq_database_url: str,
    fake_reddit_factory: Callable[..., FakeReddit],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    fake_reddit = fake_reddit_factory(client_id="test-client", client_secret=REDDIT_SECRET)
    fake_amplitude = FakeAmplitude(api_keys={AMPLITUDE_SECRET})
    fake_amplitude.start()
    try:
        env = {
            "DATABASE_URL": libpq_database_url,
            "SUBREDDITS": SUBREDDIT,
            "REDDIT_CLIENT_ID": "test-client",
            "REDDIT_CLIENT_SECRET": REDDIT_SECRET,
            "REDDIT_API_URL": fake_reddit.url,
            "REDDIT_WWW_URL": fake_reddit.url,
            "AMPLITUDE_API_KEY": AMPLITUDE_SECRET,
            "AMPLITUDE_SERVER_URL": f"{fake_amplitude.url}/2/httpapi",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        # Bound as definitions.py binds them when the variables are set: EnvVar by name.
        secret_defs = dg.Definitions(
            assets=ASSETS, asset_checks=CHECKS, jobs=JOBS, resources={"pipeline": pipeline_from_env()},
            executor=dg.in_process_executor,
        )
        poll_job = secret_defs.resolve_job_def("poll_job")
        seed_days(fake_reddit, per_day=3)
        assert poll_job.execute_in_process(instance=dagster_instance).success
        assert fake_amplitude.wait_for_stored(9, timeout=10)  # both secrets were used and accepted
        assert fake_reddit.count_requests("/api/v1/access_token") >= 1

        # Failure paths log the most: Reddit rejects the token, Amplitude rejects the key.
        fake_reddit.add_posts(SUBREDDIT, 2)
        fake_reddit.fail_next("401_token", count=1)
        fake_amplitude.fail_next("invalid_key", count=1)
        failed = poll_job.execute_in_process(instance=dagster_instance, raise_on_error=False)
        assert not failed.success
        with engine.begin() as conn:  # let the emit run below try again
            conn.execute(sa.text("UPDATE incidents SET resolved_at = now() WHERE resolved_at IS NULL"))
        assert secret_defs.resolve_job_def("emit_job").execute_in_process(instance=dagster_instance).success
        assert run_config_of_all_runs(dagster_instance) == [{}]
    finally:
        fake_amplitude.stop()

    needles = [REDDIT_SECRET, AMPLITUDE_SECRET]
    assert table_rows_containing(dagster_storage_url, needles) == {}
    assert table_rows_containing(database_url, needles) == {}
    assert files_containing(Path(dagster_instance.root_directory), needles) == []
    assert files_containing(tmp_path, needles) == []
    captured = capfd.readouterr()
    assert not [n for n in needles if n in captured.out + captured.err]


def run_config_of_all_runs(instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    return sorted({repr(run.run_config): run.run_config for run in instance.get_runs()}.values(), key=repr)


def dagster_environment(tmp_path: Path, storage: URL, extra: dict[str, str]) -> dict[str, str]:
    """A DAGSTER_HOME whose dagster.yaml is the project's, on the given PostgreSQL storage."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(project_root() / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ) | extra
    env |= {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": storage.render_as_string(hide_password=False),
        "PYTHONUNBUFFERED": "1",
    }
    return env


def test_backfill_while_the_poll_path_runs(
    engine: Engine,
    dagster_instance: dg.DagsterInstance,
    dagster_storage_url: URL,
    pipeline_env: dict[str, str],
    fake_reddit: FakeReddit,
    fake_amplitude: FakeAmplitude,
    tmp_path: Path,
) -> None:
    poll_job = defs.resolve_job_def("poll_job")
    seed_days(fake_reddit, per_day=90)
    assert poll_job.execute_in_process(instance=dagster_instance).success
    # A post approved late, far below what a poll re-reads (page 1 plus the overlap margin).
    late_at = datetime.fromisoformat(f"{day(-1)}T06:00:00+00:00").timestamp() + 17
    late = fake_reddit.add_post(SUBREDDIT, created_utc=late_at)
    assert poll_job.execute_in_process(instance=dagster_instance).success
    with engine.connect() as conn:
        assert conn.execute(sa.select(posts.c.id).where(posts.c.id == late["id"])).first() is None

    env = dagster_environment(tmp_path, dagster_storage_url, pipeline_env)
    cli = [DAGSTER, "asset", "materialize", "-m", "reddit_dagster.definitions", "--select", "new_posts"]
    log = (tmp_path / "backfill.log").open("w+")
    backfill = subprocess.Popen(
        [*cli, "--partition-range", f"{day(-2)}...{day(0)}"], env=env, cwd=project_root(),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        polls = 0
        deadline = time.monotonic() + 120
        while backfill.poll() is None and time.monotonic() < deadline:
            fake_reddit.add_posts(SUBREDDIT, 3)
            assert poll_job.execute_in_process(instance=dagster_instance).success
            polls += 1
        assert backfill.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, log_text(log)
    finally:
        if backfill.poll() is None:
            os.killpg(backfill.pid, signal.SIGKILL)
            backfill.wait()
    assert polls >= 1
    # Emission follows the outbox: whatever the backfill recorded goes out on the next emission.
    assert defs.resolve_job_def("emit_job").execute_in_process(instance=dagster_instance).success
    assert_exactly_once(engine, fake_reddit, fake_amplitude)
    with engine.connect() as conn:
        assert conn.execute(sa.select(posts.c.id).where(posts.c.id == late["id"])).first() is not None
        walks = conn.execute(sa.select(poll_log.c.new_posts).where(poll_log.c.kind == "reconcile")).scalars().all()
    # The late post, plus any post added meanwhile that the deep walk met before a poll did.
    assert len(walks) == 1 and walks[0] >= 1
    backfill_runs = [r for r in dagster_instance.get_runs() if r.tags.get("dagster/asset_partition_range_start")]
    assert len(backfill_runs) == 1
    range_events = dagster_instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("new_posts"), storage_ids=None), limit=100
    ).records
    from_backfill = {r.partition_key for r in range_events if r.run_id == backfill_runs[0].run_id}
    assert from_backfill == {day(-2), day(-1), day(0)}

    # A backfill over complete days records and sends nothing new.
    sent_before = len(fake_amplitude.stored_insert_ids())
    again = subprocess.run(
        [*cli, "--partition", day(-1)], env=env, cwd=project_root(), capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert defs.resolve_job_def("emit_job").execute_in_process(instance=dagster_instance).success
    assert len(fake_amplitude.stored_insert_ids()) == sent_before
    with engine.connect() as conn:
        last = conn.execute(sa.select(poll_log).order_by(poll_log.c.id.desc()).limit(1)).mappings().one()
    assert (last["kind"], last["new_posts"], last["error"]) == ("reconcile", 0, None)
    assert_exactly_once(engine, fake_reddit, fake_amplitude)


def log_text(log: Any) -> str:
    log.seek(0)
    return log.read()[-4000:]


# --- dagster dev ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = requests.post(
        f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables or {}}, timeout=10
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


RESOURCES_QUERY = """{
  allTopLevelResourceDetailsOrError(
    repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "reddit_dagster"}
  ) {
    __typename
    ... on ResourceDetailsList {
      results { name configuredValues { key value type } nestedResources { name type } }
    }
  }
}"""
RUNS_QUERY = "{ runsOrError { __typename ... on Runs { results { runId jobName status } } } }"


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def fresh_databases(database_url: URL) -> Iterator[tuple[URL, URL]]:
    """An application database and a Dagster storage database of their own, dropped afterwards."""
    app = database_url.set(database=f"rde2e_{uuid.uuid4().hex[:10]}")
    storage = db.dagster_url(app)
    db.upgrade(app)
    db.ensure_database(storage)
    yield app, storage
    db.drop_database(storage)
    db.drop_database(app)


def test_dagster_dev_schedule_and_sensor_deliver_each_post_once(
    fresh_databases: tuple[URL, URL], fake_reddit_factory: Callable[..., FakeReddit], tmp_path: Path
) -> None:
    app, storage = fresh_databases
    fake_reddit = fake_reddit_factory(client_id="e2e-client", client_secret=REDDIT_SECRET)
    fake_amplitude = FakeAmplitude(api_keys={AMPLITUDE_SECRET})
    fake_amplitude.start()
    port = free_port()
    pipeline = {
        "DATABASE_URL": db.libpq_url(app),
        "SUBREDDITS": SUBREDDIT,
        "REDDIT_CLIENT_ID": "e2e-client",
        "REDDIT_CLIENT_SECRET": REDDIT_SECRET,
        "REDDIT_API_URL": fake_reddit.url,
        "REDDIT_WWW_URL": fake_reddit.url,
        "AMPLITUDE_API_KEY": AMPLITUDE_SECRET,
        "AMPLITUDE_SERVER_URL": f"{fake_amplitude.url}/2/httpapi",
    }
    fast = {"POLL_SCHEDULE_CRON": "* * * * *", "EMIT_SENSOR_INTERVAL_S": "5", "RUN_STATUS_SENSOR_INTERVAL_S": "5"}
    env = dagster_environment(tmp_path, storage, pipeline | fast)
    seed_days(fake_reddit, per_day=3)
    settings = Settings(**{k.lower(): v for k, v in pipeline.items()})

    log_path = tmp_path / "dagster_dev.log"
    with log_path.open("w") as log:
        dev = subprocess.Popen(
            [DAGSTER, "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
            env=env, cwd=project_root(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        def runs() -> list[dict[str, Any]]:
            try:
                return graphql(port, RUNS_QUERY)["runsOrError"]["results"]
            except (requests.RequestException, AssertionError):
                return []

        def succeeded(job: str) -> list[dict[str, Any]]:
            return [r for r in runs() if r["jobName"] == job and r["status"] == "SUCCESS"]

        def waited(condition: Callable[[], Any], timeout: float, what: str) -> Any:
            try:
                return wait_for(lambda: dev.poll() is not None or condition(), timeout, what, 1)
            finally:
                assert dev.poll() is None, f"dagster dev exited:\n{log_path.read_text()[-3000:]}"

        # 1. The schedule fires on its own (next minute boundary): poll -> record -> emit.
        try:
            waited(lambda: succeeded("poll_job"), 110, "the scheduled poll_job run")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nruns: {runs()}\n{log_path.read_text()[-3000:]}") from None
        assert fake_amplitude.wait_for_stored(9, timeout=10)

        # 2. Posts recorded outside Dagster (as by `reddit-dagster poll`) right after a scheduled
        # run, well before the next tick: the emit sensor (5 s) launches emit_job to send them.
        fake_reddit.add_posts(SUBREDDIT, 4)
        app_engine = db.create_engine(app)
        try:
            assert [len(r.new_ids) for r in poll_subreddits(app_engine, settings)] == [4]
        finally:
            app_engine.dispose()
        try:
            waited(lambda: succeeded("emit_job"), 50, "the emit sensor's run")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nruns: {runs()}\n{log_path.read_text()[-3000:]}") from None
        assert fake_amplitude.wait_for_stored(13, timeout=10)
        assert not [r for r in runs() if r["status"] == "FAILURE"]
        counts = fake_amplitude.count_by_insert_id()
        assert len(counts) == 13 and set(counts.values()) == {1}
        assert fake_amplitude.deduped == 0
        # What the UI shows of the resources: variable names, never values.
        resources = requests.post(
            f"http://127.0.0.1:{port}/graphql", json={"query": RESOURCES_QUERY}, timeout=10
        ).text
        assert "REDDIT_CLIENT_SECRET" in resources and "AMPLITUDE_API_KEY" in resources, resources[:2000]
        assert REDDIT_SECRET not in resources and AMPLITUDE_SECRET not in resources
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGINT)
            try:
                dev.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
                dev.wait()
        fake_amplitude.stop()

    needles = [REDDIT_SECRET, AMPLITUDE_SECRET]
    assert table_rows_containing(storage, needles) == {}
    assert files_containing(tmp_path / "dagster_home", needles) == []
    assert not [n for n in needles if n in log_path.read_text()]
