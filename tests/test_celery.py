"""Distributed execution on dagster-celery with RabbitMQ (127.0.0.1:5672): two workers as separate
processes, 50 simulated subreddits, one worker SIGKILLed mid-run, then the exactly-once invariant."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import kombu
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import URL, Engine

from reddit_dagster import db
from reddit_dagster.emit import emit_due
from reddit_dagster.scale import celery_config_source
from reddit_dagster.schema import event_outbox, posts
from reddit_dagster.settings import Settings, project_root
from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit
from tests.fixtures_dagster import AMPLITUDE_KEY

pytestmark = pytest.mark.timeout(240)

BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
SUBREDDITS = [f"scale{i:02d}" for i in range(50)]
POSTS_EACH = 6
BIN = Path(sys.executable).parent

# The driver: one run per subreddit partition, 6 at a time, each on the Celery executor; prints
# {partition: success} as JSON. Run as a user would drive a backfill from a script.
DRIVER = """
import json, multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
import dagster as dg
from reddit_dagster.scale import poll_by_subreddit_job_def

partitions = sys.argv[1].split(",")
run_config = {"ops": {"subreddit_poll": {"config": {"emit_lease_s": 10.0}}}}

def run(partition):
    job = dg.reconstructable(poll_by_subreddit_job_def)
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(job, instance, run_config=run_config, tags={"dagster/partition": partition},
                                raise_on_error=False)
        return partition, result.success

# Processes, not threads: Celery's rpc:// result backend is not thread-safe.
with ProcessPoolExecutor(max_workers=6, mp_context=multiprocessing.get_context("fork")) as pool:
    print(json.dumps(dict(pool.map(run, partitions))), flush=True)
"""


def rabbitmq_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of this test run only; deleted afterwards so no leftover task reaches a later run."""
    if not rabbitmq_reachable():
        pytest.skip("RabbitMQ is not reachable at 127.0.0.1:5672 (the Celery test needs a broker)")
    name = f"rdtest-{uuid.uuid4().hex[:10]}"
    yield name
    with kombu.Connection(BROKER, connect_timeout=5) as conn:
        channel = conn.default_channel
        try:
            channel.queue_purge(name)
        finally:
            channel.queue_delete(name)


@pytest.fixture
def own_dagster_storage(database_url: URL) -> Iterator[URL]:
    """Dagster storage of this test only: its runs must not show up in other tests' instances."""
    url = database_url.set(database=f"rdcelery_{uuid.uuid4().hex[:10]}")
    db.ensure_database(url)
    # Create Dagster's tables now: two workers starting on an empty storage database race to
    # create them ("type jobs already exists"), as `make run` never lets happen.
    storage = {"storage": {"postgres": {"postgres_url": url.render_as_string(hide_password=False)}}}
    with dg.instance_for_test(overrides=storage):
        pass
    yield url
    db.drop_database(url)


def start_worker(name: str, env: dict[str, str], config: Path, log_path: Path, queue: str) -> subprocess.Popen:
    command = [
        str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(config),
        "-q", queue, "-n", name, "--", "--concurrency", "2",
    ]
    with log_path.open("w") as log:
        return subprocess.Popen(
            command, env=env, cwd=project_root(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    else:  # the CLI exited; its celery child may live on in the same session
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def drive(partitions: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, ",".join(partitions)], env=env, cwd=project_root(),
            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
        )


def driver_result(driver: subprocess.Popen, log_path: Path, timeout: float) -> dict[str, bool]:
    out, _ = driver.communicate(timeout=timeout)
    assert driver.returncode == 0, log_path.read_text()[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_celery_workers_one_killed_every_post_once(
    engine: Engine,
    own_dagster_storage: URL,
    libpq_database_url: str,
    fake_reddit_factory: Callable[..., FakeReddit],
    fake_amplitude: FakeAmplitude,
    queue: str,
    tmp_path: Path,
) -> None:
    fake_reddit = fake_reddit_factory(ratelimit_budget=100, ratelimit_window_s=10)
    for subreddit in SUBREDDITS:
        fake_reddit.add_posts(subreddit, POSTS_EACH)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(project_root() / "dagster.yaml", home / "dagster.yaml")
    config = tmp_path / "celery.yaml"
    config.write_text(
        yaml.safe_dump({"execution": {"config": {"broker": BROKER, "backend": "rpc://",
                                                  "config_source": celery_config_source(queue)}}})
    )
    env = dict(os.environ) | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the worker shells out to `celery`
        "PYTHONUNBUFFERED": "1",
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": own_dagster_storage.render_as_string(hide_password=False),
        "DATABASE_URL": libpq_database_url,
        "SUBREDDITS": ",".join(SUBREDDITS),
        "REDDIT_API_URL": fake_reddit.url,
        "REDDIT_WWW_URL": fake_reddit.url,
        "REDDIT_SHARED_LIMIT": "1",
        "REDDIT_RATE_BUDGET": "100",
        "REDDIT_RATE_WINDOW_S": "10",
        "AMPLITUDE_API_KEY": AMPLITUDE_KEY,
        "AMPLITUDE_SERVER_URL": f"{fake_amplitude.url}/2/httpapi",
        "DAGSTER_EXECUTOR": "celery",
        "CELERY_BROKER_URL": BROKER,
        "CELERY_QUEUE": queue,
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("w1", "w2", "driver", "rerun")}
    workers = {name: start_worker(name, env, config, logs[name], queue) for name in ("w1", "w2")}
    driver: subprocess.Popen | None = None
    try:
        for name, worker in workers.items():
            wait_for(lambda w=worker, n=name: w.poll() is not None or "ready." in logs[n].read_text(), 90,
                     f"worker {name} to be ready")
            assert worker.poll() is None, logs[name].read_text()[-3000:]

        driver = drive(SUBREDDITS, env, logs["driver"])
        # Mid-run: some subreddits done, most not; then w1 dies with whatever it holds.
        wait_for(lambda: driver.poll() is not None or fake_reddit.count_requests("/hot") >= 12, 150,
                 "a quarter of the subreddits polled")
        assert driver.poll() is None, logs["driver"].read_text()[-3000:]
        os.killpg(workers["w1"].pid, signal.SIGKILL)
        workers["w1"].wait()
        results = driver_result(driver, logs["driver"], timeout=150)
        assert sorted(results) == SUBREDDITS

        # Recovery as a user would do it: re-run the partitions whose runs failed.
        failed = sorted(p for p, ok in results.items() if not ok)
        if failed:
            rerun = drive(failed, env, logs["rerun"])
            assert all(driver_result(rerun, logs["rerun"], timeout=120).values())
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        for worker in workers.values():
            stop(worker)

    received = {name: logs[name].read_text().count("Task execute_plan[") for name in workers}
    assert received["w1"] >= 1 and received["w2"] >= 1, received  # both workers took steps
    # Rows a killed step had leased come back when the lease (10 s) ends; an emission sends them.
    settings = Settings(
        database_url=libpq_database_url,
        amplitude_api_key=AMPLITUDE_KEY,
        amplitude_server_url=f"{fake_amplitude.url}/2/httpapi",
    )
    wait_for(lambda: emit_due(engine, settings).ok and pending(engine) == 0, 60, "every event to be sent")

    listed = {post["id"] for subreddit in SUBREDDITS for post in fake_reddit.posts(subreddit)}
    with engine.connect() as conn:
        recorded = set(conn.scalars(sa.select(posts.c.id)))
        outbox = dict(conn.execute(sa.select(event_outbox.c.insert_id, event_outbox.c.status)).all())
    assert len(listed) == len(SUBREDDITS) * POSTS_EACH and recorded == listed
    assert set(outbox.values()) == {"sent"}
    counts = fake_amplitude.count_by_insert_id()
    assert set(counts) == set(outbox) and set(counts.values()) == {1}  # every post once, none missing
    assert 429 not in {entry["status"] for entry in fake_reddit.requests_log}  # the shared budget held



def pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(event_outbox.c.status == "pending")).scalar_one()
