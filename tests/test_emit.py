"""Exactly-once emission through the outbox (issue 4, DESIGN §3.3-3.4) against the fake Amplitude.

Real PostgreSQL, a real HTTP server, the real amplitude-analytics SDK, real processes for the
concurrency and SIGKILL tests. Every delivery test ends with `assert_ground_truth`: every recorded
post is stored at the fake exactly once under its one insert_id, the outbox's sent set equals the
fake's stored set, nothing is pending, and rejected events are accounted as dead with a reason.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster.emit import (
    NOT_ACKNOWLEDGED,
    EmitResult,
    Outcome,
    claim_due,
    emit_due,
    near_window_count,
    settle,
)
from reddit_dagster.schema import event_outbox, incidents, posts
from reddit_dagster.settings import Settings
from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.store import record_new_posts
from tests.test_record import make_post

pytestmark = pytest.mark.timeout(120)

KEY = "test-amplitude-key"
V2 = "/2/httpapi"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Short timings so faults cost milliseconds; production defaults are in emit.py.
FAST: dict[str, Any] = {
    "retry_base_s": 0.01,
    "retry_max_s": 0.1,
    "throttle_s": 0.1,
    # Generous enough that a normal answer on a loaded 2-core CI machine never times out.
    "request_timeout_s": 2.0,
    "send_timeout_s": 5.0,
    "lease_s": 10.0,
}
ALL_FAULTS = ["500", "502", "504", "503", "429", "429_throttled", "slow", "store_then_drop", "drop", "non_json_200"]
# Production-like backoff, for runs whose retried events a test inspects before they come due.
SLOW_RETRIES = FAST | {"retry_base_s": 30, "retry_max_s": 3600, "throttle_s": 30}
AFTER_STORE_FAULTS = {"500", "502", "504", "slow", "store_then_drop", "non_json_200"}


@pytest.fixture
def fake() -> Iterator[FakeAmplitude]:
    """The fake with a "slow" answer just past our shortened SDK timeout (FAST)."""
    server = FakeAmplitude(api_keys={KEY}, slow_s=3.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def settings_for(fake: FakeAmplitude, key: str | None = KEY) -> Settings:
    return Settings(amplitude_api_key=key, amplitude_server_url=fake.url + V2)


def record(engine: Engine, count: int, start: int = 0) -> list[str]:
    """Posts with a realistic mix: deleted/removed authors (device ids), emoji, huge titles."""
    batch = []
    for n in range(start, start + count):
        fields: dict[str, Any] = {}
        if n % 7 == 0:
            fields["author"] = "[deleted]"
        elif n % 11 == 0:
            fields["author"] = "[removed]"
        if n % 5 == 0:
            fields["title"] = f"post {n} 🏥 " + "😀" * (n % 700)
        if n % 13 == 0:
            fields["title"] = "long " * 400
        batch.append(make_post(n, **fields))
    return record_new_posts(engine, batch)


def outbox(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(event_outbox)).all())


def pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(event_outbox).where(event_outbox.c.status == "pending")
        ).scalar_one()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def any_due(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM event_outbox WHERE status = 'pending' AND next_attempt_at <= now() "
                    "AND (lease_expires_at IS NULL OR lease_expires_at <= now())"
                )
            ).scalar_one()
        )


def drain(engine: Engine, settings: Settings, timeout: float = 60, **overrides: Any) -> list[EmitResult]:
    """emit_due until nothing is pending, waiting for backoffs and leases to come due."""
    options = FAST | overrides
    results = []
    deadline = time.monotonic() + timeout
    while pending(engine):
        assert time.monotonic() < deadline, f"still {pending(engine)} pending after {timeout} s"
        wait_until(lambda: any_due(engine), deadline - time.monotonic(), "a pending event to come due")
        results.append(emit_due(engine, settings, **options))
    return results


def assert_ground_truth(engine: Engine, fake: FakeAmplitude, dead: set[str] | frozenset[str] = frozenset()) -> None:
    rows = outbox(engine)
    with engine.connect() as conn:
        post_ids = set(conn.scalars(sa.select(posts.c.id)))
        dead_letters = {row.key: row.message for row in conn.execute(
            sa.select(incidents).where(incidents.c.kind == "dead_letter"))}
    assert post_ids and {row.post_id for row in rows} == post_ids, "a recorded post has no outbox row"
    by_status = collections.Counter(row.status for row in rows)
    assert by_status["pending"] == 0, "events left pending"
    dead_rows = {row.insert_id: row for row in rows if row.status == "dead"}
    assert set(dead_rows) == set(dead), "dead letters differ from the rejected events"
    for insert_id, row in dead_rows.items():
        assert row.last_error and dead_letters.get(insert_id) == row.last_error
    sent = {row.insert_id for row in rows if row.status == "sent"}
    counts = fake.count_by_insert_id()
    assert {k: v for k, v in counts.items() if v != 1} == {}, "an event is stored more than once"
    assert set(counts) == sent, "stored set differs from the outbox's sent set"
    insert_ids_by_post: dict[str, set[str]] = collections.defaultdict(set)
    frozen = {row.insert_id: row.payload for row in rows}
    for event in fake.stored_events():
        insert_ids_by_post[event["event_properties"]["post_id"]].add(event["insert_id"])
        # Byte-for-byte the frozen event (the SDK adds only its library tag).
        assert {k: v for k, v in event.items() if k != "library"} == frozen[event["insert_id"]]
    assert all(len(ids) == 1 for ids in insert_ids_by_post.values()), "a post has two insert_ids"
    assert set(insert_ids_by_post) == {row.post_id for row in rows if row.status == "sent"}
    assert all(row.sent_at is not None and row.response["code"] == 200 for row in rows if row.status == "sent")
    assert all(row.lease_owner is None for row in rows)


# -- the happy path -----------------------------------------------------------------------------


def test_every_post_is_sent_once_with_its_frozen_payload(engine: Engine, fake: FakeAmplitude):
    record(engine, 250)
    result = emit_due(engine, settings_for(fake), batch_size=100, **FAST)
    assert (result.ok, result.claimed, result.sent, result.dead, result.retried, result.batches) == (
        True, 250, 250, 0, 0, 3)
    assert "250 sent" in result.summary()
    assert [entry["n_events"] for entry in fake.requests_log] == [100, 100, 50]
    assert_ground_truth(engine, fake)
    again = emit_due(engine, settings_for(fake), **FAST)
    assert (again.claimed, again.batches, len(fake.requests_log)) == (0, 0, 3)
    assert {row.attempts for row in outbox(engine)} == {1}


# -- faults one at a time -----------------------------------------------------------------------

EXPECTED_ERROR = {
    "500": "HTTP 500", "502": "HTTP 502", "504": "HTTP 504", "503": "HTTP 503",
    "429": "HTTP 429", "429_throttled": "HTTP 429", "slow": "timed out",
    "store_then_drop": "no acknowledgement (", "drop": "no acknowledgement (",
    "non_json_200": "no acknowledgement (JSONDecodeError",
}


@pytest.mark.parametrize("kind", ALL_FAULTS)
def test_each_fault_class_alone(engine: Engine, fake: FakeAmplitude, kind: str):
    record(engine, 60)
    fake.fail_next(kind, 2)
    # One run with production-like backoff: the two failed batches must wait, classified.
    started = time.monotonic()  # every row is settled after this, so its wait is >= floor - elapsed
    first = emit_due(engine, settings_for(fake), batch_size=20, **SLOW_RETRIES)
    assert fake.wait_for_requests(3, timeout=10)  # a "slow" answer is logged when it is finally sent
    assert collections.Counter(entry["fault"] for entry in fake.requests_log) == {kind: 2, None: 1}
    assert (first.sent, first.retried, first.dead) == (20, 40, 0)
    with engine.connect() as conn:
        waiting = conn.execute(
            sa.text("SELECT last_error, attempts, extract(epoch FROM next_attempt_at - now()) AS wait_s "
                    "FROM event_outbox WHERE status = 'pending'")
        ).all()
    assert len(waiting) == 40
    assert all(EXPECTED_ERROR[kind] in row.last_error and row.attempts == 1 for row in waiting), waiting[0]
    # 30 s throttle pause; else 30 s backoff * jitter >= 0.5; less the time spent since the run began.
    floor = (30 if kind.startswith("429") else 15) - (time.monotonic() - started) - 0.5
    assert min(row.wait_s for row in waiting) >= floor
    if kind in AFTER_STORE_FAULTS:
        assert len(fake.stored) == 60, "the fault should have stored the events before failing"

    with engine.begin() as conn:
        conn.execute(sa.update(event_outbox).values(next_attempt_at=sa.func.now()))
    drain(engine, settings_for(fake))
    assert_ground_truth(engine, fake)
    if kind in AFTER_STORE_FAULTS:
        assert fake.deduped == 40, "resends of stored events must hit Amplitude's dedupe"


def test_connection_refused_keeps_events_pending_until_amplitude_is_back(engine: Engine, fake: FakeAmplitude):
    record(engine, 40)
    port = int(fake.url.rsplit(":", 1)[1])
    settings = settings_for(fake)
    fake.stop()
    result = emit_due(engine, settings, batch_size=20, **SLOW_RETRIES)
    assert not result.ok and "acknowledged none of 40 events" in result.error
    assert {row.last_error for row in outbox(engine)} == {"no response from Amplitude (connection failed)"}
    fake.start(port=port)
    with engine.begin() as conn:
        conn.execute(sa.update(event_outbox).values(next_attempt_at=sa.func.now()))
    assert all(r.ok for r in drain(engine, settings))
    assert_ground_truth(engine, fake)


def test_late_acknowledgement_after_the_lease_expired_marks_nothing(engine: Engine, fake: FakeAmplitude):
    record(engine, 10)
    fake.fail_next("slow")  # stores, then answers 200 after 3 s: after our 0.3 s lease
    result = emit_due(engine, settings_for(fake), **(FAST | {"lease_s": 0.3, "request_timeout_s": 5}))
    # The late 200 settled nothing; the expired rows were claimed again and resent (deduped).
    assert [(e["status"], e["n_events"], e["n_stored"]) for e in fake.requests_log] == [(200, 10, 10), (200, 10, 0)]
    assert (result.claimed, result.sent, result.batches) == (10, 10, 2)
    assert {row.attempts for row in outbox(engine)} == {2}
    assert fake.deduped == 10
    assert_ground_truth(engine, fake)


def test_all_faults_at_20_percent_together(engine: Engine):
    record(engine, 300)
    # Seed 5 draws faults early (seed 0 happens to draw none in its first 20 requests).
    with FakeAmplitude(api_keys={KEY}, slow_s=3.0, seed=5) as fake:
        fake.set_fault_rate(0.2, ALL_FAULTS)
        drain(engine, settings_for(fake), batch_size=10)
        faults = collections.Counter(entry["fault"] for entry in fake.requests_log if entry["fault"])
        assert sum(faults.values()) >= 8 and len(faults) >= 6, faults
        assert_ground_truth(engine, fake)
    assert max(row.attempts for row in outbox(engine)) >= 2


# -- rejections -----------------------------------------------------------------------------------


def corrupt(engine: Engine, post_id: str, change: Callable[[dict[str, Any]], None]) -> str:
    """Simulate a bad frozen payload (as an older build or a manual edit could leave)."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(event_outbox).where(event_outbox.c.post_id == post_id)).one()
        payload = dict(row.payload)
        change(payload)
        conn.execute(sa.update(event_outbox).where(event_outbox.c.insert_id == row.insert_id).values(payload=payload))
    return row.insert_id


def test_invalid_events_are_dead_lettered_with_reasons_and_the_rest_is_sent(engine: Engine, fake: FakeAmplitude):
    ids = record(engine, 50)
    placeholder = corrupt(engine, ids[3], lambda p: p.update(user_id="undefined", device_id="n/a"))
    short_id = corrupt(engine, ids[4], lambda p: (p.pop("device_id", None), p.update(user_id="bob")))
    iso_time = corrupt(engine, ids[8], lambda p: p.update(time="2026-01-01T00:00:00Z"))
    nested = corrupt(engine, ids[9], lambda p: p["event_properties"].update(tags=[["a"]]))
    result = emit_due(engine, settings_for(fake), batch_size=50, **FAST)
    assert (result.sent, result.dead, result.retried) == (46, 4, 0)
    # One rejected request, then the rest of that batch in the next one.
    assert [(e["status"], e["n_events"]) for e in fake.requests_log] == [(400, 48), (200, 46)]
    errors = {row.insert_id: row.last_error for row in outbox(engine) if row.status == "dead"}
    for insert_id in (placeholder, short_id):
        assert errors[insert_id] == "Amplitude rejected the event (HTTP 400): Invalid field values on some events"
    assert "time" in errors[iso_time] and errors[iso_time].startswith("not sendable as frozen")
    assert "event_properties" in errors[nested]
    assert_ground_truth(engine, fake, dead={placeholder, short_id, iso_time, nested})


def test_413_splits_batches_and_dead_letters_a_single_event_too_large(engine: Engine):
    big = make_post(
        999, title="😀" * 600, url="https://e.com/" + "😀" * 600, link_flair_text="😀" * 600, author="A" * 1100
    )
    with FakeAmplitude(api_keys={KEY}, max_bytes=20_000) as fake:
        record_new_posts(engine, [make_post(n, title="t" * 1000) for n in range(60)] + [big])
        result = emit_due(engine, settings_for(fake), batch_size=100, **FAST)
        sizes = [(e["status"], e["n_events"]) for e in fake.requests_log]
        assert sizes[0] == (413, 61) and (413, 1) in sizes and sizes.count((413, 1)) == 1
        assert all(n <= 15 for status, n in sizes if status == 200)
        assert (result.sent, result.dead) == (60, 1)
        [dead] = [row for row in outbox(engine) if row.status == "dead"]
        assert dead.post_id == big.id
        assert dead.last_error.startswith("Amplitude rejected the event (HTTP 413): Payload too large")
        assert_ground_truth(engine, fake, dead={dead.insert_id})


def test_invalid_key_stops_the_run_and_marks_nothing(engine: Engine, fake: FakeAmplitude):
    record(engine, 30)
    wrong = "wrong-key-7f3a9c"
    result = emit_due(engine, settings_for(fake, wrong), batch_size=10, **FAST)
    assert not result.ok
    assert result.error == (
        "Amplitude rejected the API key (HTTP 400 Invalid API key); nothing was marked sent; 30 events stay pending"
    )
    assert wrong not in result.summary() and wrong not in repr(result)
    assert len(fake.requests_log) == 1, "the run must stop at the first rejection"
    rows = outbox(engine)
    assert {(r.status, r.attempts, r.lease_owner) for r in rows} == {("pending", 0, None)}
    with engine.connect() as conn:
        [incident] = conn.execute(sa.select(incidents).where(incidents.c.kind == "amplitude_key_rejected")).all()
    assert incident.resolved_at is None and wrong not in incident.message
    assert fake.stored == []
    # With the right key everything goes, and the incident closes.
    assert emit_due(engine, settings_for(fake), **FAST).sent == 30
    with engine.connect() as conn:
        assert conn.execute(sa.select(incidents.c.resolved_at)).scalar_one() is not None
    assert_ground_truth(engine, fake)


def test_missing_key_sends_nothing_and_keeps_everything_pending(engine: Engine, fake: FakeAmplitude):
    record(engine, 30)
    result = emit_due(engine, settings_for(fake, None), **FAST)
    assert result.ok and result.skipped_reason == "AMPLITUDE_API_KEY is not set; 30 events stay pending"
    assert result.summary() == "emit skipped: AMPLITUDE_API_KEY is not set; 30 events stay pending"
    assert fake.requests_log == []
    assert {(r.status, r.attempts, r.lease_owner) for r in outbox(engine)} == {("pending", 0, None)}


# -- the 7-day dedupe window ------------------------------------------------------------------------


def test_events_near_the_dedupe_window_are_flagged_not_resent(engine: Engine, fake: FakeAmplitude):
    ids = record(engine, 10)
    with engine.begin() as conn:
        # Attempted before and 6.5 days old: a resend might duplicate an attempt that did land.
        conn.execute(sa.update(event_outbox).where(event_outbox.c.post_id.in_(ids[:4]))
                     .values(attempts=1, created_at=sa.text("now() - interval '6 days 12 hours'")))
        # Never attempted, 8 days old: nothing of it can be at Amplitude, so it is simply sent.
        conn.execute(sa.update(event_outbox).where(event_outbox.c.post_id == ids[4])
                     .values(created_at=sa.text("now() - interval '8 days'")))
    assert near_window_count(engine) == 4
    result = emit_due(engine, settings_for(fake), **FAST)
    assert (result.ok, result.sent, result.near_window) == (True, 6, 4)
    assert "4 events near Amplitude's 7-day dedupe window" in result.summary()
    with engine.connect() as conn:
        [incident] = conn.execute(sa.select(incidents).where(incidents.c.kind == "near_dedupe_window")).all()
    assert incident.message.startswith("4 pending events")
    assert pending(engine) == 4 and len(fake.stored) == 6
    # An operator's explicit choice sends them.
    opted = emit_due(engine, settings_for(fake), allow_near_window=True, **FAST)
    assert (opted.sent, opted.near_window) == (4, 0)
    assert_ground_truth(engine, fake)


# -- claim and settle ---------------------------------------------------------------------------------


def test_claims_are_disjoint_skip_locked_rows_and_settle_needs_the_lease(engine: Engine, fake: FakeAmplitude):
    record(engine, 30)
    first = claim_due(engine, "owner-a", 10, lease_s=60)
    second = claim_due(engine, "owner-b", 100, lease_s=0.2)
    assert len(first) == 10 and len(second) == 20
    assert not {c.insert_id for c in first} & {c.insert_id for c in second}
    assert claim_due(engine, "owner-c", 100, lease_s=60) == []
    # Another owner's settle changes nothing.
    assert settle(engine, "owner-b", [Outcome(first[0].insert_id, "sent", "ok", 200)]) == set()
    # An expired lease comes back with attempts counted; the old owner can no longer settle it.
    wait_until(lambda: bool(claim_due(engine, "owner-c", 100, lease_s=60)), 10, "owner-b's leases to expire")
    assert settle(engine, "owner-b", [Outcome(second[0].insert_id, "sent", "ok", 200)]) == set()
    with engine.connect() as conn:
        owners = collections.Counter(conn.scalars(sa.select(event_outbox.c.lease_owner)))
        attempts = collections.Counter(conn.scalars(sa.select(event_outbox.c.attempts)))
    assert owners == {"owner-a": 10, "owner-c": 20} and attempts == {1: 10, 2: 20}
    assert settle(engine, "owner-a", [Outcome(first[0].insert_id, "retry", NOT_ACKNOWLEDGED)]) == {first[0].insert_id}
    # Rows locked by an open transaction elsewhere are skipped, not waited for.
    with engine.begin() as conn:
        conn.execute(sa.update(event_outbox).values(lease_owner=None, lease_expires_at=None,
                                                    next_attempt_at=sa.func.now()))
    with engine.connect() as locker:
        lock_five = "SELECT insert_id FROM event_outbox ORDER BY insert_id LIMIT 5 FOR UPDATE"
        locked = set(locker.scalars(sa.text(lock_five)))
        claimed = {c.insert_id for c in claim_due(engine, "owner-d", 100, lease_s=60)}
        locker.rollback()
    assert len(locked) == 5 and len(claimed) == 25 and not locked & claimed


# -- real processes -----------------------------------------------------------------------------------

# A parent that has imported everything once and forks emitter processes on request, so a test can
# start (and SIGKILL) dozens of real emitters without paying the interpreter start-up each time.
# Each child opens its own database connections and its own SDK client (both created after fork).
ZYGOTE = """
import os, sys
from reddit_dagster import db
from reddit_dagster.emit import emit_due
from reddit_dagster.settings import Settings
print("ready", flush=True)
for line in sys.stdin:
    command, *args = line.split()
    if command == "fork":
        owner, batch_size, lease_s, out = args
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                result = emit_due(db.create_engine(db.app_url()), Settings(), owner=owner,
                                  batch_size=int(batch_size), lease_s=float(lease_s), retry_base_s=0.01,
                                  retry_max_s=0.1, throttle_s=0.1, request_timeout_s=2, send_timeout_s=5)
                with open(out, "w") as f:
                    f.write(str(result.sent))
                code = 0
            finally:
                os._exit(code)
        print(pid, flush=True)
    elif command == "wait":
        _, status = os.waitpid(int(args[0]), 0)
        print(os.waitstatus_to_exitcode(status), flush=True)
"""


class Emitters:
    """Forks emitter processes (see ZYGOTE); `wait` returns a child's exit code (-9 when SIGKILLed)."""

    def __init__(self, env: dict[str, str], out_dir: str) -> None:
        self.out_dir = out_dir
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=env, cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._read() == "ready"

    def _read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def _ask(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read()

    def start(self, owner: str, batch_size: int, lease_s: float) -> int:
        return int(self._ask(f"fork {owner} {batch_size} {lease_s} {self.sent_file(owner)}"))

    def sent_file(self, owner: str) -> str:
        return os.path.join(self.out_dir, f"{owner}.sent")

    def wait(self, pid: int) -> int:
        return int(self._ask(f"wait {pid}"))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def exited(pid: int) -> bool:
    """True once the process has ended (a zombie until its parent, the zygote, reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.fixture
def emitters(child_env: dict[str, str], fake: FakeAmplitude, tmp_path: Any) -> Iterator[Emitters]:
    env = child_env | {"AMPLITUDE_API_KEY": KEY, "AMPLITUDE_SERVER_URL": fake.url + V2}
    zygote = Emitters(env, str(tmp_path))
    try:
        yield zygote
    finally:
        zygote.close()


def test_four_emitter_processes_at_once(engine: Engine, fake: FakeAmplitude, emitters: Emitters):
    record(engine, 400)
    pids = {f"proc-{i}": emitters.start(f"proc-{i}", 10, 10.0) for i in range(4)}
    assert [emitters.wait(pid) for pid in pids.values()] == [0, 0, 0, 0]
    sent = [int(open(emitters.sent_file(owner)).read()) for owner in pids]
    assert sum(sent) == 400 and sum(1 for n in sent if n) >= 2, sent
    assert fake.deduped == 0, "two emitters sent the same event"
    assert_ground_truth(engine, fake)


def test_sigkill_loop_of_emitters_then_restart(engine: Engine, fake: FakeAmplitude, emitters: Emitters):
    record(engine, 600)
    rng = random.Random(4)
    kills = interrupted = 0
    for i in range(24):
        owner = f"kill-{i}"
        requests_before = len(fake.requests_log)
        pid = emitters.start(owner, 5, 1.0)
        let_through = rng.choice([0, 1, 1, 2, 3, 4])  # answered requests before the kill
        target = requests_before + let_through
        wait_until(lambda pid=pid, target=target: len(fake.requests_log) >= target or exited(pid),
                   30, f"{let_through} answered requests from {owner}")
        os.kill(pid, signal.SIGKILL)
        kills += emitters.wait(pid) == -signal.SIGKILL
        with engine.connect() as conn:
            interrupted += bool(conn.execute(
                sa.select(sa.func.count()).select_from(event_outbox).where(
                    event_outbox.c.lease_owner == owner, event_outbox.c.status == "pending")
            ).scalar_one())
    assert kills >= 20
    assert interrupted >= 3, "too few kills landed while a batch was leased"
    assert pending(engine) > 0, "the kills should have left work for the restart"
    drain(engine, settings_for(fake))  # the restart: waits for the killed leases to expire
    assert_ground_truth(engine, fake)
    assert max(row.attempts for row in outbox(engine)) >= 2


# -- the command line ---------------------------------------------------------------------------------


def cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "reddit-dagster"), "emit"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_cli_emit(engine: Engine, fake: FakeAmplitude, child_env: dict[str, str]):
    record(engine, 20)
    env = {k: v for k, v in child_env.items() if not k.startswith("AMPLITUDE_")}
    env["AMPLITUDE_SERVER_URL"] = fake.url + V2
    missing = cli(env)
    assert missing.returncode == 0, missing.stderr
    assert missing.stdout.strip() == "emit skipped: AMPLITUDE_API_KEY is not set; 20 events stay pending"
    rejected = cli(env | {"AMPLITUDE_API_KEY": "wrong-key-5be1d2"})
    assert rejected.returncode == 1
    assert "Amplitude rejected the API key" in rejected.stderr and "wrong-key-5be1d2" not in rejected.stderr
    assert len(rejected.stderr.strip().splitlines()) == 1, rejected.stderr
    ok = cli(env | {"AMPLITUDE_API_KEY": KEY})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("emit: 20 sent, 0 dead")
    assert_ground_truth(engine, fake)
