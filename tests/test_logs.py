"""Structured logs (issue 8): formats, levels, redaction of secrets, the event contract of a real
poll and emission, and the same lines in a Dagster run's event log.

Real PostgreSQL, the fakes over real HTTP, real processes for format selection (a pseudo-terminal
stands in for a terminal).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import URL, Engine

from reddit_dagster import logs
from reddit_dagster.definitions import defs
from reddit_dagster.emit import emit_due
from reddit_dagster.ingest import poll_subreddit
from reddit_dagster.reddit import RedditClient
from reddit_dagster.schema import event_outbox
from reddit_dagster.settings import LogSettings, Settings
from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
SUB = "healthcare"
REDDIT_SECRET = "rs-LOGS-4hT8xQ2mZ"
AMPLITUDE_KEY = "ak-LOGS-9pW3vN7cY"
DB_PASSWORD = "pw-LOGS-6yR1kD5sX"
BEARER_TOKEN = "tok-LOGS-2bM8zF4gW"
BASIC_PASSWORD = "basic-LOGS-7cJ3qV"
WEBHOOK_PATH = "T0LOGS/B0LOGS/wh-LOGS-5nP2"
SECRETS = [REDDIT_SECRET, AMPLITUDE_KEY, DB_PASSWORD, BEARER_TOKEN, BASIC_PASSWORD, WEBHOOK_PATH]
EMIT_FAST: dict[str, Any] = {"retry_base_s": 30, "retry_max_s": 60, "request_timeout_s": 2.0,
                             "send_timeout_s": 5.0, "lease_s": 10.0}


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], tuple[str, list[dict[str, Any]]]]]:
    """Logging as JSON at DEBUG for the test; returns a reader of (raw stderr, parsed events)."""
    logs.configure(settings=LogSettings(log_format="json", log_level="DEBUG"))
    capsys.readouterr()

    def read() -> tuple[str, list[dict[str, Any]]]:
        err = capsys.readouterr().err
        return err, [json.loads(line) for line in err.splitlines() if line.startswith("{")]

    yield read
    logs.configure()


def test_secrets_are_redacted_from_every_event(
    json_logs: Callable[[], tuple[str, list[dict[str, Any]]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDDIT_CLIENT_SECRET", REDDIT_SECRET)
    monkeypatch.setenv("AMPLITUDE_API_KEY", AMPLITUDE_KEY)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"https://hooks.example.com/services/{WEBHOOK_PATH}")
    monkeypatch.setenv("DAGSTER_PG_URL", f"postgresql+psycopg2://dagster:{DB_PASSWORD}@db.internal/dagster")
    basic = base64.b64encode(f"client:{BASIC_PASSWORD}".encode()).decode()
    log = logs.get_logger("reddit_dagster.test_logs")
    log.info(
        "request_failed",
        subreddit=SUB,
        detail=f"secret {REDDIT_SECRET} and key {AMPLITUDE_KEY} in a sentence",
        url=f"postgresql://app:{DB_PASSWORD}@db.internal:5432/reddit_dagster",
        headers={"Authorization": f"Bearer {BEARER_TOKEN}", "X-Other": f"Basic {basic}"},
        attempts=[f"bearer {BEARER_TOKEN}", 3, None],
        webhook=f"https://hooks.example.com/services/{WEBHOOK_PATH}",
        note="plain words stay: basic auth, token bucket",
        insert_id="reddit-post-created-abc12",
    )
    try:
        raise RuntimeError(f"connection to postgresql://app:{DB_PASSWORD}@db/x failed, key {AMPLITUDE_KEY}")
    except RuntimeError:
        log.exception("unexpected_error")
    # An old-style stdlib call under our logger goes through the same redaction.
    logging.getLogger("reddit_dagster.legacy").warning("legacy %s", REDDIT_SECRET)

    err, events = json_logs()
    assert not [secret for secret in SECRETS if secret in err], err
    assert basic not in err
    assert [e["event"] for e in events] == ["request_failed", "unexpected_error", "legacy [REDACTED]"]
    first = events[0]
    assert first["detail"] == "secret [REDACTED] and key [REDACTED] in a sentence"
    assert first["url"] == "postgresql://app:[REDACTED]@db.internal:5432/reddit_dagster"
    assert first["headers"] == {"Authorization": "[REDACTED]", "X-Other": "Basic [REDACTED]"}  # by name, by form
    assert first["attempts"] == ["bearer [REDACTED]", 3, None]
    assert first["note"] == "plain words stay: basic auth, token bucket"
    assert first["insert_id"] == "reddit-post-created-abc12"
    assert "RuntimeError" in events[1]["exception"] and "[REDACTED]" in events[1]["exception"]


def test_a_poll_and_an_emission_log_each_step_with_stable_fields(
    engine: Engine,
    json_logs: Callable[[], tuple[str, list[dict[str, Any]]]],
    fake_reddit_factory: Callable[..., FakeReddit],
) -> None:
    # Secrets given in code, not in the environment: the clients register them for redaction.
    reddit = fake_reddit_factory(client_id="cid", client_secret=REDDIT_SECRET)
    reddit.add_posts(SUB, 3)
    reddit.fail_next("503", count=1, path_contains="/new")
    client = RedditClient(api_url=reddit.url, www_url=reddit.url, user_agent="linux:logs-test:0.1",
                          client_id="cid", client_secret=REDDIT_SECRET, backoff_base_s=0.01, max_wait_s=0.1)
    amplitude = FakeAmplitude(api_keys={AMPLITUDE_KEY})
    amplitude.start()
    try:
        with logs.bound(run_id="run-logs-1"):
            result = poll_subreddit(engine, client, SUB)
            assert result.ok and len(result.new_ids) == 3
            # One event Amplitude will reject for good, and a first request that fails (503).
            with engine.begin() as conn:
                victim = conn.execute(sa.select(event_outbox).where(event_outbox.c.post_id == result.new_ids[0])).one()
                payload = dict(victim.payload) | {"user_id": "undefined", "device_id": "n/a"}
                conn.execute(sa.update(event_outbox).where(event_outbox.c.insert_id == victim.insert_id)
                             .values(payload=payload))
            amplitude.fail_next("503", count=1)
            settings = Settings(amplitude_api_key=AMPLITUDE_KEY, amplitude_server_url=amplitude.url + "/2/httpapi")
            first = emit_due(engine, settings, **EMIT_FAST)
            assert first.retried == 3
            with engine.begin() as conn:
                conn.execute(sa.update(event_outbox).values(next_attempt_at=sa.func.now()))
            second = emit_due(engine, settings, **EMIT_FAST)
            assert (second.sent, second.dead) == (2, 1)
    finally:
        amplitude.stop()
        client.close()

    err, events = json_logs()
    assert not [secret for secret in (REDDIT_SECRET, AMPLITUDE_KEY) if secret in err]
    ours = [e for e in events if e["logger"].startswith("reddit_dagster.")]
    assert all(e["run_id"] == "run-logs-1" and e["timestamp"] and e["level"] for e in ours)

    def named(name: str) -> list[dict[str, Any]]:
        return [e for e in ours if e["event"] == name]

    [started] = named("poll_started")
    assert started["subreddit"] == SUB and started["kind"] == "poll"
    [retry] = named("request_retry_scheduled")
    assert (retry["subreddit"], retry["http_status"], retry["attempt"]) == (SUB, 503, 1)
    pages = named("page_fetched")
    assert {p["listing"] for p in pages} == {"new", "hot"}
    assert all(p["http_status"] == 200 and isinstance(p["duration_ms"], int) for p in pages)
    assert sorted(e["post_id"] for e in named("post_recorded")) == sorted(result.new_ids)
    [finished] = named("poll_finished")
    assert finished["new_posts"] == 3 and finished["ok"] is True and finished["duration_ms"] >= 0

    assert [e["claimed"] for e in named("batch_claimed")] == [3, 3, 2]  # 400 for the batch: the rest resent
    attempts = named("send_attempt")
    assert {(e["insert_id"], e["attempt"]) for e in attempts} >= {(victim.insert_id, 1), (victim.insert_id, 2)}
    assert all(e["post_id"] for e in attempts)
    retried = named("retry_scheduled")
    assert {e["http_status"] for e in retried[:3]} == {503} and {e["attempt"] for e in retried[:3]} == {1}
    acked = named("event_acknowledged")
    assert len(acked) == 2 and all(e["http_status"] == 200 and e["duration_ms"] >= 0 for e in acked)
    assert {e["insert_id"] for e in acked}.isdisjoint({victim.insert_id})
    [dead] = named("dead_letter")
    assert (dead["insert_id"], dead["http_status"], dead["level"]) == (victim.insert_id, 400, "error")
    assert "Amplitude rejected the event" in dead["reason"]


def _run_logger(env: dict[str, str], *, terminal: bool = False) -> str:
    """stderr of a process that logs one INFO and one DEBUG event, on a pseudo-terminal if asked."""
    code = (
        "from reddit_dagster import logs\n"
        "log = logs.get_logger('reddit_dagster.probe')\n"
        "log.info('probe_info', subreddit='healthcare', attempt=1)\n"
        "log.debug('probe_debug')\n"
    )
    if not terminal:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child exited and closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_format_follows_the_terminal_unless_log_format_says_otherwise() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "LOG_LEVEL")}
    plain = _run_logger(env)
    [line] = plain.splitlines()
    event = json.loads(line)
    assert (event["event"], event["level"], event["subreddit"], event["attempt"]) == ("probe_info", "info", SUB, 1)

    terminal = _run_logger(env, terminal=True)
    assert "\x1b[" in terminal  # coloured
    uncoloured = re.sub(r"\x1b\[[0-9;]*m", "", terminal)
    assert "probe_info" in uncoloured and "subreddit=healthcare" in uncoloured and "{" not in uncoloured

    console = _run_logger(env | {"LOG_FORMAT": "console", "LOG_LEVEL": "debug"})
    assert "probe_info" in console and "probe_debug" in console and "\x1b[" not in console
    assert not any(line.startswith("{") for line in console.splitlines())

    forced_json = _run_logger(env | {"LOG_FORMAT": "json"}, terminal=True)
    assert json.loads(forced_json.strip().splitlines()[-1])["event"] == "probe_info"

    assert _run_logger(env | {"LOG_LEVEL": "WARNING"}) == ""
    typo = [json.loads(line) for line in _run_logger(env | {"LOG_LEVEL": "loud"}).splitlines()]
    assert [e["event"] for e in typo] == ["log_settings_ignored", "probe_info"]
    assert "LOG_LEVEL 'loud'" in typo[0]["problem"]


def test_the_command_line_logs_events_only_when_log_level_is_set(
    engine: Engine, fake_reddit: FakeReddit, child_env: dict[str, str]
) -> None:
    fake_reddit.add_posts(SUB, 2)
    env = child_env | {"REDDIT_API_URL": fake_reddit.url, "REDDIT_WWW_URL": fake_reddit.url, "SUBREDDITS": SUB}
    cli = [str(Path(sys.executable).parent / "reddit-dagster"), "poll"]
    quiet = subprocess.run(cli, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == ""
    fake_reddit.add_posts(SUB, 1)
    loud = subprocess.run(cli, env=env | {"LOG_LEVEL": "INFO"}, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert loud.returncode == 0 and loud.stdout.startswith(f"r/{SUB} poll: 1 new")
    events = [json.loads(line)["event"] for line in loud.stderr.splitlines()]
    assert events[0] == "poll_started" and "post_recorded" in events and "poll_finished" in events


def test_log_lines_reach_the_dagster_run_log(
    engine: Engine, dagster_storage_url: URL, pipeline_env: dict[str, str], fake_reddit: FakeReddit,
    tmp_path: Path,
) -> None:
    """With the project's dagster.yaml python_logs setting, a run's event log holds our lines."""
    python_logs = yaml.safe_load((ROOT / "dagster.yaml").read_text())["python_logs"]
    assert "reddit_dagster" in python_logs["managed_python_loggers"]
    overrides = {
        "storage": {"postgres": {"postgres_url": dagster_storage_url.render_as_string(hide_password=False)}},
        "python_logs": python_logs,
        "compute_logs": {
            "module": "dagster.core.storage.local_compute_log_manager",
            "class": "LocalComputeLogManager",
            "config": {"base_dir": str(tmp_path / "compute_logs")},
        },
    }
    fake_reddit.add_posts(SUB, 2)
    with dg.instance_for_test(overrides=overrides) as instance:
        result = defs.resolve_job_def("poll_job").execute_in_process(instance=instance)
        assert result.success
        entries = instance.all_logs(result.run_id)
    ours = [json.loads(e.user_message) for e in entries if e.user_message.startswith("{")]
    by_event = {line["event"]: line for line in ours}
    assert {"poll_started", "page_fetched", "post_recorded", "poll_finished", "event_acknowledged"} <= set(by_event)
    assert by_event["poll_started"]["run_id"] == result.run_id
    assert by_event["event_acknowledged"]["run_id"] == result.run_id
    step_of = {e.step_key for e in entries if e.user_message.startswith('{"timestamp"')}
    assert step_of == {"poll_reddit", "amplitude_events"}
