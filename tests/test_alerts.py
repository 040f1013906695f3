"""Alerts (issue 8): each incident is posted once to a webhook receiver on 127.0.0.1, whatever the
receiver does. Real PostgreSQL, real HTTP, real processes for the concurrent senders."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster import alerts
from reddit_dagster.definitions import defs
from reddit_dagster.schema import event_outbox, incidents
from reddit_dagster.store import open_incident, resolve_incidents
from tests.test_record import make_post
from tests.webhook_receiver import PATH, WebhookReceiver

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
FAST = {"timeout_s": 2.0, "attempts": 3, "backoff_s": 0.01}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def incident_rows(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(incidents).order_by(incidents.c.id)).mappings()]


def test_each_incident_is_sent_once_as_slack_json(engine: Engine, receiver: WebhookReceiver) -> None:
    assert open_incident(engine, "gap", "healthcare", "r/healthcare: the poll reached the end of the listing")
    for n in range(3):
        open_incident(engine, "dead_letter", f"reddit-post-created-p{n}", "Amplitude rejected the event (HTTP 400)")
    first = alerts.notify_open_incidents(engine, receiver.url, **FAST)
    assert (first.notified, first.messages, first.error) == (4, 2, None)
    texts = receiver.texts()
    assert len(texts) == 2  # one message per kind
    assert texts[0].startswith("reddit_dagster: 3 new dead_letter incident(s)") and "retry-dead" in texts[0]
    assert texts[1].startswith("reddit_dagster: 1 new gap incident(s)") and "r/healthcare" in texts[1]
    assert sorted(receiver.incident_ids()) == [row["id"] for row in incident_rows(engine)]
    assert all(row["notified_at"] is not None and row["notify_error"] is None for row in incident_rows(engine))

    # Ticks and runs keep calling: the same incidents (seen again, still open) are not sent again.
    open_incident(engine, "gap", "healthcare", "seen again")
    again = alerts.notify_open_incidents(engine, receiver.url, **FAST)
    assert (again.notified, again.messages) == (0, 0) and receiver.requests == 2

    # Resolved, then the problem recurs: a new incident, a new alert.
    resolve_incidents(engine, "gap", "healthcare")
    assert open_incident(engine, "gap", "healthcare", "the poll reached the end again")
    assert alerts.notify_open_incidents(engine, receiver.url, **FAST).notified == 1
    assert len(receiver.texts()) == 3 and "the poll reached the end again" in receiver.texts()[2]

    # Without a webhook nothing is sent or stamped.
    open_incident(engine, "run_failure", "poll_job", "poll_job run failed")
    skipped = alerts.notify_open_incidents(engine, None)
    assert skipped.skipped_reason and "ALERT_WEBHOOK_URL" in skipped.summary()
    assert [r["notified_at"] for r in incident_rows(engine) if r["kind"] == "run_failure"] == [None]


def test_receiver_down_then_up_delivers_once(
    engine: Engine, receiver: WebhookReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    open_incident(engine, "amplitude_key_rejected", "amplitude", "Amplitude rejected the API key")
    open_incident(engine, "gap", "healthcare", "posts may be lost")
    receiver.stop()  # connection refused from now on

    down = alerts.notify_open_incidents(engine, receiver.url, **FAST)
    assert down.notified == 0 and down.undelivered == 1  # stops at the first failure: the receiver is down
    assert "ConnectionError posting to 127.0.0.1" in down.error and "after 3 attempts" in down.error
    rows = incident_rows(engine)
    assert [r["notified_at"] for r in rows] == [None, None]
    assert rows[0]["notify_error"] == down.error and rows[1]["notify_error"] is None
    assert PATH not in down.error and "hook-path" not in capsys.readouterr().err  # the URL's secret path

    # Alerting never breaks a caller: the wrapper used after polls and emissions returns quietly.
    assert alerts.check_and_notify(engine, receiver.url, pending_warn_s=3600).undelivered == 1

    receiver.start()  # same port
    up = alerts.notify_open_incidents(engine, receiver.url, **FAST)
    assert (up.notified, up.messages, up.error) == (2, 2, None)
    assert sorted(receiver.incident_ids()) == [r["id"] for r in rows]
    assert all(r["notified_at"] and r["notify_error"] is None for r in incident_rows(engine))
    assert alerts.notify_open_incidents(engine, receiver.url, **FAST).notified == 0
    assert len(receiver.texts()) == 2


def test_retries_are_bounded_and_only_for_transient_answers(engine: Engine, receiver: WebhookReceiver) -> None:
    open_incident(engine, "gap", "healthcare", "posts may be lost")
    receiver.statuses = [503, 429]
    assert alerts.notify_open_incidents(engine, receiver.url, **FAST).notified == 1
    assert receiver.requests == 3 and len(receiver.texts()) == 1

    open_incident(engine, "gap", "medicine", "posts may be lost")
    receiver.statuses = [503, 503, 503, 503]
    failed = alerts.notify_open_incidents(engine, receiver.url, **FAST)
    assert failed.undelivered == 1 and receiver.requests == 6 and "HTTP 503" in failed.error

    receiver.statuses = [404]  # a revoked webhook: retrying cannot help
    gone = alerts.notify_open_incidents(engine, receiver.url, **FAST)
    assert receiver.requests == 7 and gone.error == f"HTTP 404 from 127.0.0.1:{receiver.port}: 'no_service'"
    assert alerts.notify_open_incidents(engine, receiver.url, **FAST).notified == 1
    assert len(receiver.texts()) == 2


def test_two_processes_never_send_the_same_incident(
    engine: Engine, receiver: WebhookReceiver, child_env: dict[str, str]
) -> None:
    for kind, keys in (("dead_letter", ["a", "b", "c"]), ("gap", ["healthcare"]), ("run_failure", ["poll_job"])):
        for key in keys:
            open_incident(engine, kind, key, f"{kind} {key}")
    expected = [row["id"] for row in incident_rows(engine)]
    # The first message is held until a second one arrives: both processes are sending at once.
    receiver.hold_first_until_second = True
    code = (
        "import sys; from reddit_dagster import alerts, db\n"
        "r = alerts.notify_open_incidents(db.create_engine(db.app_url()), sys.argv[1], timeout_s=30)\n"
        "print(r.notified, r.error)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, receiver.url], env=child_env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert receiver.max_in_flight == 2, "the two senders never overlapped"
    assert sorted(receiver.incident_ids()) == expected  # each exactly once
    assert sum(int(out.split()[0]) for out, _ in outputs) == len(expected)
    assert all(r["notified_at"] is not None for r in incident_rows(engine))


def test_events_pending_past_the_warning_threshold_open_one_incident(
    engine: Engine, receiver: WebhookReceiver
) -> None:
    from reddit_dagster.store import record_new_posts

    record_new_posts(engine, [make_post(n) for n in range(3)])
    assert alerts.check_and_notify(engine, receiver.url, pending_warn_s=3600).notified == 0  # all fresh
    with engine.begin() as conn:
        conn.execute(sa.update(event_outbox).values(created_at=sa.func.now() - sa.text("interval '2 hours'")))
    for _tick in range(3):
        alerts.check_and_notify(engine, receiver.url, pending_warn_s=3600)
    [text] = receiver.texts()
    assert "stale_pending" in text and "3 event(s) pending for over 1 h" in text
    # Sent: the incident resolves, and a later backlog is a new incident.
    with engine.begin() as conn:
        conn.execute(sa.update(event_outbox).values(status="sent", sent_at=sa.func.now()))
    assert alerts.open_stale_pending_incident(engine, 3600) is False
    assert [r["resolved_at"] is not None for r in incident_rows(engine)] == [True]


def test_alert_sensor_sends_incidents_and_flags_stale_events(
    engine: Engine, receiver: WebhookReceiver, dagster_instance: dg.DagsterInstance,
    pipeline_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    sensor = defs.resolve_sensor_def("alert_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    open_incident(engine, "run_failure", "emit_job", "emit_job run 1234 failed: Amplitude down", "1234")

    def tick() -> str:
        with dg.build_sensor_context(instance=dagster_instance, definitions=defs,
                                     resources={"pipeline": defs.resources["pipeline"]}) as context:
            return sensor.evaluate_tick(context).skip_message

    assert tick() == "alerts: 1 incident(s) notified in 1 message(s)"
    assert "emit_job run 1234 failed" in receiver.texts()[0] and "(run 1234)" in receiver.texts()[0]
    assert tick() == "alerts: 0 incident(s) notified in 0 message(s)"
    assert len(receiver.texts()) == 1
