"""Operator commands (issue 8): dead-letters, retry-dead, reconcile, and alerts from the CLI with
the webhook receiver down, then up. Real PostgreSQL, the fakes and a webhook receiver over real
HTTP; the commands run in-process through cli.main (one also as the installed console script)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster import logs
from reddit_dagster.cli import main
from reddit_dagster.schema import event_outbox, incidents, poll_log
from reddit_dagster.settings import get_settings
from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit
from reddit_dagster.store import record_new_posts
from tests.test_record import make_post
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-amplitude-key"
SUB = "healthcare"

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, libpq_database_url: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """Run `reddit-dagster ARGS` in this process with extra environment; returns (exit code, out, err)."""
    monkeypatch.setenv("DATABASE_URL", libpq_database_url)

    def run(*args: str, **env: str) -> tuple[int, str, str]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    yield run
    get_settings.cache_clear()
    logs.configure()  # main() configured the process's logging for a command line


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def outbox_row(engine: Engine, insert_id: str) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(sa.select(event_outbox).where(event_outbox.c.insert_id == insert_id)).one()


def dead_letter_incidents(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(incidents).where(incidents.c.kind == "dead_letter")).mappings()
        return [dict(row) for row in rows]


def test_dead_letter_operations_and_alerts_with_the_receiver_down_then_up(
    engine: Engine, cli: Cli, fake_amplitude: FakeAmplitude, receiver: WebhookReceiver
) -> None:
    ids = record_new_posts(engine, [make_post(n) for n in range(4)])
    victim = f"reddit-post-created-{ids[1]}"
    with engine.begin() as conn:  # an event Amplitude rejects: placeholder ids only
        payload = dict(outbox_row(engine, victim).payload)
        broken = {k: v for k, v in payload.items() if k not in ("user_id", "device_id")} | {"device_id": "n/a"}
        conn.execute(sa.update(event_outbox).where(event_outbox.c.insert_id == victim).values(payload=broken))
    env = {"AMPLITUDE_API_KEY": KEY, "AMPLITUDE_SERVER_URL": f"{fake_amplitude.url}/2/httpapi",
           "ALERT_WEBHOOK_URL": receiver.url}
    receiver.stop()

    # The receiver is down: the emission works all the same; the alert waits, marked undelivered.
    code, out, err = cli("emit", **env)
    assert (code, err) == (0, "") and out.startswith("emit: 3 sent, 1 dead")
    [incident] = dead_letter_incidents(engine)
    assert incident["key"] == victim and incident["notified_at"] is None
    assert "ConnectionError posting to 127.0.0.1" in incident["notify_error"]

    # Up again: the next command delivers it, once.
    receiver.start()
    assert cli("emit", **env)[0] == 0
    [text] = receiver.texts()
    assert victim in text and "dead_letter" in text and "retry-dead" in text
    [incident] = dead_letter_incidents(engine)
    assert incident["notified_at"] is not None and incident["notify_error"] is None

    code, out, _ = cli("dead-letters")
    assert code == 0 and victim in out and "HTTP 400" in out and "Invalid field values" in out
    assert out.splitlines()[-1].startswith("1 dead letter(s)")
    code, out, _ = cli("dead-letters", "--json")
    [letter] = json.loads(out)
    assert (letter["insert_id"], letter["post_id"], letter["subreddit"], letter["attempts"], letter["http_status"]) == (
        victim, ids[1], SUB, 1, 400)
    assert letter["reason"].startswith("Amplitude rejected the event (HTTP 400)")

    # Wrong ids change nothing and say why, in one line.
    sent_id = f"reddit-post-created-{ids[0]}"
    code, out, err = cli("retry-dead", "--id", victim, "--id", "no-such-id", sent_id)
    assert code == 1 and out == ""
    assert err == f"error: not dead letters: no-such-id (unknown), {sent_id} (sent); nothing changed\n"
    assert outbox_row(engine, victim).status == "dead"
    with pytest.raises(SystemExit):
        cli("retry-dead")  # --id or --all is required

    # The operator fixes the payload, then requeues it: same insert_id, attempts kept, due now.
    with engine.begin() as conn:
        conn.execute(sa.update(event_outbox).where(event_outbox.c.insert_id == victim).values(payload=payload))
    code, out, _ = cli("retry-dead", "--id", victim)
    assert code == 0 and out.startswith("1 dead letter(s) back to pending")
    row = outbox_row(engine, victim)
    assert (row.status, row.attempts, row.lease_owner) == ("pending", 1, None)
    assert dead_letter_incidents(engine)[0]["resolved_at"] is not None

    code, out, _ = cli("emit", **env)
    assert code == 0 and out.startswith("emit: 1 sent, 0 dead")
    assert fake_amplitude.count_by_insert_id() == {f"reddit-post-created-{i}": 1 for i in ids}
    assert cli("retry-dead", "--all")[1] == "no dead letters to retry\n"
    assert cli("dead-letters")[1] == "no dead letters\n"
    assert len(receiver.texts()) == 1  # nothing new happened, nothing more was sent


def test_retry_dead_all(engine: Engine, cli: Cli) -> None:
    ids = record_new_posts(engine, [make_post(n) for n in range(3)])
    with engine.begin() as conn:
        conn.execute(sa.update(event_outbox).where(event_outbox.c.post_id != ids[2])
                     .values(status="dead", attempts=2, last_error="Amplitude rejected the event (HTTP 400): x"))
    code, out, _ = cli("retry-dead", "--all")
    assert code == 0 and out.startswith("2 dead letter(s) back to pending")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(event_outbox.c.status, event_outbox.c.attempts)).all()
    assert sorted(rows) == [("pending", 0), ("pending", 2), ("pending", 2)]


def test_reconcile_walks_the_whole_listing_on_demand(engine: Engine, cli: Cli, fake_reddit: FakeReddit) -> None:
    fake_reddit.add_posts(SUB, 150)
    env = {"REDDIT_API_URL": fake_reddit.url, "REDDIT_WWW_URL": fake_reddit.url, "SUBREDDITS": "medicine"}
    code, out, err = cli("reconcile", "--subreddit", f"r/{SUB}", **env)
    assert (code, err) == (0, "") and out.startswith(f"r/{SUB} reconcile: 150 new, 150 fetched, 2 pages")
    code, out, _ = cli("reconcile", "--subreddit", SUB, **env)
    assert code == 0 and out.startswith(f"r/{SUB} reconcile: 0 new")
    with engine.connect() as conn:
        assert conn.execute(sa.select(poll_log.c.kind, poll_log.c.subreddit)).all() == [("reconcile", SUB)] * 2

    code, out, err = cli("reconcile", "--subreddit", "no such!", **env)
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("error: r/no such! reconcile failed") and "invalid subreddit name" in err


def test_console_script(engine: Engine, child_env: dict[str, str]) -> None:
    script = str(Path(sys.executable).parent / "reddit-dagster")
    out = subprocess.run([script, "dead-letters", "--json"], env=child_env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, "[]\n", "")
