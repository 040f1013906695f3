"""Drain the outbox to Amplitude: claim due rows under a lease, send them with the SDK, settle on proof.

The exactly-once argument (DESIGN §3.3-3.4) in code:

- `claim_due` takes due rows with FOR UPDATE SKIP LOCKED in a short transaction and stamps a lease
  (owner, expiry) on them, so two emitters never hold the same row; a killed emitter's rows come
  back when the lease expires and are resent with the same insert_id (Amplitude dedupes them).
- Each claimed row's frozen payload becomes an SDK event field for field (`sdk_event` refuses a
  payload the SDK would alter), the batch goes out as one request, and `settle` marks a row `sent`
  only on the SDK callback with code 200 for that event, and only while this owner's lease holds.
- The SDK loses events silently in several cases (research/amplitude.md §3): no callback means
  "unknown", the row stays pending with backoff + jitter and is resent later.

How the SDK is driven (amplitude-analytics 1.3.0): one client per process. Its buffer is replaced
by `_FlushOnlyStorage`, which has no background consumer thread and never re-queues a failed
attempt. So every send is one explicit `flush()` whose Future tells when that request is over
(callbacks have fired, or it was lost), every failure reaches the callback with our
NOT_ACKNOWLEDGED message, and all retry policy (backoff, jitter, 413 splitting, 429 pauses,
attempt counts) lives in the outbox, where it survives crashes. The process also exits without
the consumer's flush-interval delay.

Events whose first attempt may be nearly 7 days old are not resent (Amplitude's insert_id dedupe
lasts 7 days; a resend after that could duplicate an event that did land): they are counted as
`near_window`, an incident is opened, and an operator resends them with allow_near_window=True.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import amplitude.constants
import sqlalchemy as sa
from amplitude import Amplitude, BaseEvent, Config
from amplitude.constants import EventLogLevel
from amplitude.event import EVENT_KEY_MAPPING
from amplitude.storage import InMemoryStorage, InMemoryStorageProvider
from sqlalchemy.engine import Connection, Engine

from reddit_dagster import logs
from reddit_dagster.schema import event_outbox, incidents, posts
from reddit_dagster.settings import Settings
from reddit_dagster.store import open_incident, resolve_incidents

log = logs.get_logger(__name__)

# Amplitude dedupes an insert_id for 7 days; an event first attempted longer ago than this could
# become a duplicate if resent, so it waits for an operator (DESIGN §3, last paragraph).
NEAR_WINDOW_S = 6 * 24 * 3600.0
# The SDK's socket timeout per request (its own default, a module constant it reads per request).
REQUEST_TIMEOUT_S = 10.0
# Amplitude's guidance after a 429 for throttled users/devices: pause them about 30 s.
THROTTLE_PAUSE_S = 30.0
RETRY_BASE_S = 10.0
RETRY_MAX_S = 3600.0
# Given to the SDK as the reason when it tries to re-queue a failed attempt (we refuse: see module doc).
NOT_ACKNOWLEDGED = "not acknowledged; the outbox retries it"
# What the SDK logs (at ERROR, on its logger) when Amplitude rejects the key; it calls no callback.
SDK_KEY_REJECTED_LOG = "Invalid API Key"

Verdict = Literal["sent", "dead", "retry", "resend"]


class AmplitudeKeyRejected(RuntimeError):
    """Amplitude answered "Invalid API key"; the message never contains the key."""


class UnsendablePayload(ValueError):
    """A frozen payload the SDK cannot send exactly as stored."""


@dataclass
class EmitResult:
    claimed: int = 0  # distinct events claimed in this run
    sent: int = 0  # acknowledged by Amplitude and settled while our lease held
    retried: int = 0  # left pending with backoff (no acknowledgement, 5xx, 429, ...)
    dead: int = 0  # rejected by Amplitude (or unsendable as frozen); never retried blindly
    batches: int = 0  # requests sent
    error: str | None = None
    skipped_reason: str | None = None
    near_window: int = 0  # pending events held back near the 7-day dedupe window

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        if self.skipped_reason:
            return f"emit skipped: {self.skipped_reason}"
        counts = (
            f"{self.sent} sent, {self.dead} dead, {self.retried} left pending for retry "
            f"({self.claimed} claimed, {self.batches} requests)"
        )
        near = (
            f"; {self.near_window} events near Amplitude's 7-day dedupe window held back (see incidents)"
            if self.near_window
            else ""
        )
        if self.error:
            return f"emit failed: {self.error} [{counts}]{near}"
        return f"emit: {counts}{near}"


@dataclass(frozen=True)
class ClaimedEvent:
    insert_id: str
    payload: dict[str, Any]
    attempts: int  # including this claim


@dataclass(frozen=True)
class Outcome:
    """What one attempt proved about one event, and what the outbox does next."""

    insert_id: str
    verdict: Verdict  # sent; dead; retry (backoff + jitter); resend (due now, e.g. after a 413 split)
    detail: str  # Amplitude's message for sent, else the reason (last_error)
    code: int | None = None
    min_delay_s: float = 0.0  # floor under the backoff (the 429 pause)


# -- the SDK event ------------------------------------------------------------------------------

_ATTRIBUTE_BY_WIRE_NAME = {wire: attribute for attribute, (wire, _type) in EVENT_KEY_MAPPING.items()}
# The SDK's ContextPlugin replaces these when they are falsy, which would break the frozen event.
_FILLED_BY_SDK_WHEN_FALSY = ("time", "insert_id")


SdkCallback = Callable[[BaseEvent, int, str | None], None]


def sdk_event(payload: dict[str, Any], callback: SdkCallback | None = None) -> BaseEvent:
    """The SDK event for a frozen payload, field for field, or UnsendablePayload.

    The SDK silently drops fields of unexpected types and whole property dicts with unsupported
    values (research/amplitude.md §3); checking its serialised body against the payload turns that
    silent change into an explicit refusal.
    """
    unknown = sorted(set(payload) - set(_ATTRIBUTE_BY_WIRE_NAME))
    if unknown:
        raise UnsendablePayload(f"fields the SDK does not know: {', '.join(unknown)}")
    for name in _FILLED_BY_SDK_WHEN_FALSY:
        if not payload.get(name):
            raise UnsendablePayload(f"{name} is {payload.get(name)!r}; the SDK would replace it")
    event = BaseEvent(event_type=str(payload.get("event_type")), callback=callback)
    for wire_name, value in payload.items():
        # A copy: the SDK truncates strings in place when it serialises.
        event[_ATTRIBUTE_BY_WIRE_NAME[wire_name]] = copy.deepcopy(value)
    body = event.get_event_body()
    changed = sorted(name for name in set(payload) | set(body) if body.get(name) != payload.get(name))
    if changed:
        raise UnsendablePayload(f"the SDK would not send these fields as frozen: {', '.join(changed)}")
    return event


# -- the process's SDK client -------------------------------------------------------------------


class _FlushOnlyStorage(InMemoryStorage):
    """The SDK's in-memory buffer without its background consumer and without its retry queue.

    Events leave only through an explicit flush(), so each request has a Future to wait on. A failed
    attempt is never re-queued (the SDK would retry from memory, which a crash loses): refusing it
    makes the SDK call back with NOT_ACKNOWLEDGED and the failure code, and the outbox retries.
    """

    def push(self, event: BaseEvent, delay: int = 0) -> tuple[bool, str | None]:
        if event.retry:
            return False, NOT_ACKNOWLEDGED
        with self.lock:
            self.ready_queue.append(event)
            self.total_events += 1
        return True, None


class _FlushOnlyStorageProvider(InMemoryStorageProvider):
    def get_storage(self) -> InMemoryStorage:
        return _FlushOnlyStorage()


class _KeyRejectionWatch(logging.Filter):
    """Notices the SDK's "Invalid API Key" log line, its only sign of a rejected key.

    A filter on the SDK's logger rather than a handler, so every other SDK record still reaches
    the application's handlers (or stderr). The one it recognises during our send is dropped: the
    run reports the rejection itself, in one line.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flag: threading.Event | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.flag is not None and record.getMessage() == SDK_KEY_REJECTED_LOG:
            self.flag.set()
            return False
        return True


@dataclass
class _Sdk:
    client: Amplitude
    key_watch: _KeyRejectionWatch


_sdk: _Sdk | None = None
# One emit run at a time per process: the SDK client and its key watch are shared.
_run_lock = threading.Lock()


def _process_sdk() -> _Sdk:
    """The process's one SDK client (the SDK keeps every client alive until exit: never make two)."""
    global _sdk
    if _sdk is None:
        sdk_logger = logging.getLogger(amplitude.constants.LOGGER_NAME)
        if sdk_logger.getEffectiveLevel() > logging.ERROR:
            sdk_logger.setLevel(logging.ERROR)
        watch = _KeyRejectionWatch()
        sdk_logger.addFilter(watch)
        config = Config(
            flush_max_retries=1,  # one attempt per flush; our storage refuses re-queues anyway
            storage_provider=_FlushOnlyStorageProvider(),
            logger=sdk_logger,
            event_log_level=EventLogLevel.NONE,
        )
        _sdk = _Sdk(client=Amplitude("unset", config), key_watch=watch)
    return _sdk


# -- one request --------------------------------------------------------------------------------


class _Batch:
    """Collects the SDK's callbacks for one request; the first answer per event counts."""

    def __init__(self, insert_ids: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self._open = True
        self.answers: dict[str, tuple[int, str]] = {}
        self.expected = set(insert_ids)
        self.key_rejected = threading.Event()

    def record(self, event: BaseEvent, code: int, message: str | None) -> None:
        with self._lock:
            if self._open and event.insert_id in self.expected and event.insert_id not in self.answers:
                self.answers[event.insert_id] = (int(code), message or "")

    def callback(self) -> SdkCallback:
        # A plain function, not a bound method: the SDK deep-copies events, and a copied bound
        # method would copy this batch (and fail on its lock, which the SDK logs and swallows).
        def on_answer(event: BaseEvent, code: int, message: str | None) -> None:
            self.record(event, code, message)

        return on_answer

    def close(self) -> dict[str, tuple[int, str]]:
        """Stop accepting callbacks (a late one after a timeout is ignored) and return the answers."""
        with self._lock:
            self._open = False
            return dict(self.answers)


def _verdict(insert_id: str, code: int, message: str, payload: dict[str, Any], *, batch_size: int,
             others_rejected: bool, throttle_s: float) -> Outcome:
    if code == 200 and message != NOT_ACKNOWLEDGED:
        return Outcome(insert_id, "sent", message, code)
    if message == NOT_ACKNOWLEDGED:  # the request failed; nothing was said about this event itself
        if code == 413:
            # Too large as a batch: resend at once, the caller halves the batch size.
            return Outcome(insert_id, "resend", f"HTTP 413 for a batch of {batch_size}; split", code)
        if code == 400 and others_rejected:
            # Amplitude rejected other events of the request and ingested nothing: resend this one now.
            return Outcome(insert_id, "resend", "HTTP 400 for other events of its batch; resent", code)
        if code == 429:
            return Outcome(insert_id, "retry", "HTTP 429 throttled", code, min_delay_s=throttle_s)
        if code == -1:
            return Outcome(insert_id, "retry", "no response from Amplitude (connection failed)", code)
        if code == 408:
            return Outcome(insert_id, "retry", "no acknowledgement (request timed out)", code)
        return Outcome(insert_id, "retry", f"HTTP {code} from Amplitude", code)
    # A verdict on this event itself.
    if code == 429:  # "Exceeded daily quota": Amplitude asks to retry later
        return Outcome(insert_id, "retry", f"HTTP 429 {message}", code, min_delay_s=max(throttle_s, RETRY_MAX_S))
    if code == 400 and message.startswith("Request missing required field"):
        # A request-level complaint, not about this event (the SDK always sends both fields).
        return Outcome(insert_id, "retry", f"HTTP 400 {message}", code)
    if code == 413:
        size = len(json.dumps(payload))
        return Outcome(insert_id, "dead", f"Amplitude rejected the event (HTTP 413): {message} "
                       f"(the event alone is {size} bytes of JSON)", code)
    if 400 <= code < 500:
        return Outcome(insert_id, "dead", f"Amplitude rejected the event (HTTP {code}): {message}", code)
    return Outcome(insert_id, "retry", f"HTTP {code} {message}".strip(), code)


def send_batch(
    events: Sequence[ClaimedEvent], *, api_key: str, server_url: str, send_timeout_s: float,
    throttle_s: float = THROTTLE_PAUSE_S,
) -> tuple[list[Outcome], int]:
    """Send these events as one request: (one Outcome each, requests made: 0 or 1).

    Raises AmplitudeKeyRejected (no outcome then: Amplitude said nothing about the events).

    Caller must hold _run_lock (the client and its key watch are shared within the process).
    """
    sdk = _process_sdk()
    outcomes: list[Outcome] = []
    batch = _Batch([claimed.insert_id for claimed in events])
    tracked: list[ClaimedEvent] = []
    on_answer = batch.callback()
    for claimed in events:
        try:
            event = sdk_event(claimed.payload, on_answer)
        except UnsendablePayload as exc:
            outcomes.append(Outcome(claimed.insert_id, "dead", f"not sendable as frozen: {exc}"))
            continue
        if event.insert_id != claimed.insert_id:
            outcomes.append(Outcome(claimed.insert_id, "dead", "payload insert_id differs from the outbox row's"))
            continue
        tracked.append(claimed)
        sdk.client.track(event)
    if not tracked:
        return outcomes, 0

    config = sdk.client.configuration
    config.api_key = api_key
    config.server_url = server_url
    config.flush_queue_size = len(tracked)  # one request; the setter also undoes any 413 shrinking
    sdk.key_watch.flag = batch.key_rejected
    lost_reason = "no acknowledgement from Amplitude"
    try:
        [future] = sdk.client.flush()
        if future is None:
            lost_reason = "no acknowledgement (the SDK did not send the events)"
        else:
            try:
                future.result(timeout=send_timeout_s)
            except concurrent.futures.TimeoutError:
                lost_reason = f"no acknowledgement within {send_timeout_s:g} s"
            except Exception as exc:  # the SDK's silent-loss cases: connection reset, non-JSON 2xx, ...
                lost_reason = f"no acknowledgement ({type(exc).__name__} while reading Amplitude's answer)"
    finally:
        sdk.key_watch.flag = None
        answers = batch.close()
    if batch.key_rejected.is_set():
        raise AmplitudeKeyRejected("Amplitude rejected the API key (HTTP 400 Invalid API key)")
    others_rejected = any(400 <= code < 500 and message != NOT_ACKNOWLEDGED for code, message in answers.values())
    for claimed in tracked:
        answer = answers.get(claimed.insert_id)
        if answer is None:
            outcomes.append(Outcome(claimed.insert_id, "retry", lost_reason))
        else:
            code, message = answer
            outcomes.append(_verdict(claimed.insert_id, code, message, claimed.payload, batch_size=len(tracked),
                                     others_rejected=others_rejected, throttle_s=throttle_s))
    return outcomes, 1


# -- the outbox ---------------------------------------------------------------------------------


def _near_window_clause(near_window_s: float) -> str:
    # Only events that may already have landed (attempted before) can turn into duplicates.
    return f"(attempts > 0 AND created_at < now() - make_interval(secs => {float(near_window_s)!r}))"


def claim_due(
    engine: Engine, owner: str, limit: int, lease_s: float, *, allow_near_window: bool = False,
    near_window_s: float = NEAR_WINDOW_S,
) -> list[ClaimedEvent]:
    """Lease up to `limit` due events to `owner` for `lease_s` seconds; attempts += 1 on each.

    Due: pending, next_attempt_at reached, no live lease, and (unless allowed) not near the
    dedupe window. Rows locked by a concurrent claim are skipped, never waited for.
    """
    near = "" if allow_near_window else f"AND NOT {_near_window_clause(near_window_s)}"
    stmt = sa.text(
        f"""
        WITH due AS (
            SELECT insert_id FROM event_outbox
            WHERE status = 'pending' AND next_attempt_at <= now()
              AND (lease_expires_at IS NULL OR lease_expires_at <= now())
              {near}
            ORDER BY next_attempt_at, insert_id
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
        )
        UPDATE event_outbox AS o
        SET lease_owner = :owner,
            lease_expires_at = now() + make_interval(secs => :lease_s),
            attempts = o.attempts + 1
        FROM due WHERE o.insert_id = due.insert_id
        RETURNING o.insert_id, o.payload, o.attempts, o.next_attempt_at
        """  # noqa: S608 (near is built from a float, never from input)
    )
    with engine.begin() as conn:
        rows = conn.execute(stmt, {"limit": limit, "owner": owner, "lease_s": float(lease_s)}).all()
    rows.sort(key=lambda row: (row.next_attempt_at, row.insert_id))
    return [ClaimedEvent(row.insert_id, row.payload, row.attempts) for row in rows]


def _held_by(owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        event_outbox.c.status == "pending",
        event_outbox.c.lease_owner == owner,
        event_outbox.c.lease_expires_at > sa.func.now(),
    )


_RELEASE = {"lease_owner": None, "lease_expires_at": None}


def settle(
    engine: Engine, owner: str, outcomes: Sequence[Outcome], *, retry_base_s: float = RETRY_BASE_S,
    retry_max_s: float = RETRY_MAX_S,
) -> set[str]:
    """Apply outcomes to the rows whose lease `owner` still holds; returns the insert_ids settled.

    An outcome for a row whose lease expired (or was taken over) changes nothing: that row is
    due again and its resend carries the same insert_id.
    """
    groups: dict[tuple[Verdict, str, int | None, float], list[str]] = {}
    for outcome in outcomes:
        key = (outcome.verdict, outcome.detail, outcome.code, outcome.min_delay_s)
        groups.setdefault(key, []).append(outcome.insert_id)
    settled: set[str] = set()
    with engine.begin() as conn:
        for (verdict, detail, code, min_delay_s), ids in groups.items():
            values: dict[str, Any] = dict(_RELEASE)
            if verdict == "sent":
                values |= {"status": "sent", "sent_at": sa.func.now(), "last_error": None,
                           "response": {"code": code, "message": detail}}
            elif verdict == "dead":
                values |= {"status": "dead", "last_error": detail,
                           "response": {"code": code, "message": detail} if code is not None else None}
            elif verdict == "resend":
                values |= {"next_attempt_at": sa.func.now(), "last_error": detail}
            else:
                exponential = retry_base_s * sa.func.power(2, sa.func.least(event_outbox.c.attempts - 1, 30))
                backoff = sa.func.least(retry_max_s, exponential * (0.5 + sa.func.random()))  # with jitter
                delay = sa.func.greatest(min_delay_s, backoff)
                values |= {"next_attempt_at": sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, delay),
                           "last_error": detail}
            stmt = (
                sa.update(event_outbox)
                .where(event_outbox.c.insert_id.in_(ids), _held_by(owner))
                .values(values)
                .returning(event_outbox.c.insert_id)
            )
            settled.update(conn.scalars(stmt))
    return settled


def release(engine: Engine, owner: str, insert_ids: Sequence[str], reason: str) -> int:
    """Give leased rows back untouched: due again, and this claim not counted as an attempt."""
    with engine.begin() as conn:
        return conn.execute(
            sa.update(event_outbox)
            .where(event_outbox.c.insert_id.in_(list(insert_ids)), _held_by(owner))
            .values(_RELEASE | {"attempts": sa.func.greatest(event_outbox.c.attempts - 1, 0), "last_error": reason})
        ).rowcount


def _count(conn: Connection, where: str) -> int:
    return int(conn.execute(sa.text(f"SELECT count(*) FROM event_outbox WHERE {where}")).scalar_one())  # noqa: S608


def pending_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return _count(conn, "status = 'pending'")


def near_window_count(engine: Engine, near_window_s: float = NEAR_WINDOW_S) -> int:
    """Pending events that may already have landed and are close to Amplitude's 7-day dedupe window.

    For `status` and the asset check: these are held back from automatic resends.
    """
    with engine.connect() as conn:
        return _count(conn, f"status = 'pending' AND {_near_window_clause(near_window_s)}")


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Tally:
    claimed: set[str] = field(default_factory=set)
    last: dict[str, Verdict] = field(default_factory=dict)  # each settled event's latest verdict
    batches: int = 0
    last_failure: str | None = None

    def result(self) -> EmitResult:
        verdicts = list(self.last.values())
        return EmitResult(
            claimed=len(self.claimed),
            sent=verdicts.count("sent"),
            dead=verdicts.count("dead"),
            retried=verdicts.count("retry") + verdicts.count("resend"),
            batches=self.batches,
        )


def emit_due(
    engine: Engine,
    settings: Settings,
    *,
    owner: str | None = None,
    batch_size: int = 500,
    lease_s: float = 120,
    max_rounds: int = 1000,
    send_timeout_s: float = 30,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    retry_base_s: float = RETRY_BASE_S,
    retry_max_s: float = RETRY_MAX_S,
    throttle_s: float = THROTTLE_PAUSE_S,
    allow_near_window: bool = False,
    near_window_s: float = NEAR_WINDOW_S,
) -> EmitResult:
    """Send every due outbox event, one request per claimed batch, until nothing is due (at most
    max_rounds batches); then return what happened. Never raises for Amplitude's answers.

    A missing AMPLITUDE_API_KEY sends nothing and is not an error. A rejected key stops the run
    with an error, releases the claimed rows without counting the attempt and opens an incident.
    A run in which Amplitude acknowledged nothing at all is reported as an error too (the events
    stay pending), so a scheduler shows the outage.

    request_timeout_s sets the SDK's socket timeout (a process-wide module constant of the SDK);
    send_timeout_s bounds the wait for one request and must be longer.
    """
    if batch_size < 1 or lease_s <= 0 or send_timeout_s <= 0:
        raise ValueError("batch_size, lease_s and send_timeout_s must be positive")
    near_window = 0 if allow_near_window else near_window_count(engine, near_window_s)
    if near_window:
        log.warning("near_dedupe_window", pending=near_window)
        open_incident(
            engine, "near_dedupe_window", "event_outbox",
            f"{near_window} pending events were first attempted nearly 7 days ago; a resend could "
            "duplicate them in Amplitude, so they wait for an operator (emit with allow_near_window)",
        )
    api_key = settings.amplitude_api_key.get_secret_value() if settings.amplitude_api_key else ""
    if not api_key:
        pending = pending_count(engine)
        log.warning("emit_skipped", reason="AMPLITUDE_API_KEY is not set", pending=pending)
        return EmitResult(
            skipped_reason=f"AMPLITUDE_API_KEY is not set; {pending} events stay pending", near_window=near_window
        )
    logs.add_secret(api_key)
    owner = owner or default_owner()
    tally = _Tally()
    limit = batch_size
    with _run_lock:
        amplitude.constants.CONNECTION_TIMEOUT = float(request_timeout_s)
        for _round in range(max_rounds):
            claimed = claim_due(engine, owner, limit, lease_s, allow_near_window=allow_near_window,
                                near_window_s=near_window_s)
            if not claimed:
                break
            tally.claimed.update(c.insert_id for c in claimed)
            log.info("batch_claimed", owner=owner, claimed=len(claimed), limit=limit)
            for event in claimed:
                log.info("send_attempt", insert_id=event.insert_id, post_id=_post_id(event.payload),
                         attempt=event.attempts)
            started = time.monotonic()
            try:
                outcomes, requests = send_batch(claimed, api_key=api_key, server_url=settings.amplitude_server_url,
                                      send_timeout_s=send_timeout_s, throttle_s=throttle_s)
            except AmplitudeKeyRejected as exc:
                log.error("amplitude_key_rejected", claimed=len(claimed), duration_ms=logs.elapsed_ms(started),
                          http_status=400, reason=str(exc))
                tally.batches += 1
                release(engine, owner, [c.insert_id for c in claimed], str(exc))
                message = f"{exc}; nothing was marked sent; {pending_count(engine)} events stay pending"
                open_incident(engine, "amplitude_key_rejected", "amplitude", message)
                result = tally.result()
                result.error, result.near_window = message, near_window
                return result
            duration_ms = logs.elapsed_ms(started)
            tally.batches += requests
            settled = settle(engine, owner, outcomes, retry_base_s=retry_base_s, retry_max_s=retry_max_s)
            _log_outcomes(claimed, outcomes, settled, duration_ms)
            for outcome in outcomes:
                if outcome.insert_id not in settled:
                    continue  # lease lost meanwhile: the row is someone else's (or due) again
                tally.last[outcome.insert_id] = outcome.verdict
                if outcome.verdict == "dead":
                    open_incident(engine, "dead_letter", outcome.insert_id, outcome.detail)
                elif outcome.verdict == "retry":
                    tally.last_failure = outcome.detail
            if any(o.verdict == "sent" for o in outcomes):
                resolve_incidents(engine, "amplitude_key_rejected")
            if any(o.verdict == "resend" and o.code == 413 for o in outcomes):
                limit = max(1, len(claimed) // 2)
    result = tally.result()
    result.near_window = near_window
    if result.retried and not result.sent and not result.dead:
        result.error = (
            f"Amplitude acknowledged none of {result.retried} events (last: {tally.last_failure}); "
            "they stay pending for retry"
        )
    (log.warning if result.error else log.info)(
        "emit_finished", owner=owner, claimed=result.claimed, sent=result.sent, dead=result.dead,
        retried=result.retried, batches=result.batches, error=result.error,
    )
    return result


def _post_id(payload: dict[str, Any]) -> str | None:
    properties = payload.get("event_properties")
    return properties.get("post_id") if isinstance(properties, dict) else None


def _log_outcomes(claimed: Sequence[ClaimedEvent], outcomes: Sequence[Outcome], settled: set[str],
                  duration_ms: int) -> None:
    """One event per outcome: acknowledged, dead letter, retry scheduled, or lease lost."""
    by_id = {event.insert_id: event for event in claimed}
    for outcome in outcomes:
        event = by_id.get(outcome.insert_id)
        fields: dict[str, Any] = {
            "insert_id": outcome.insert_id,
            "post_id": _post_id(event.payload) if event else None,
            "attempt": event.attempts if event else None,
            "http_status": outcome.code if outcome.code is not None and outcome.code > 0 else None,
            "duration_ms": duration_ms,
        }
        if outcome.insert_id not in settled:
            log.warning("lease_lost", **fields, reason="the lease expired before settling; the row is due again")
        elif outcome.verdict == "sent":
            log.info("event_acknowledged", **fields)
        elif outcome.verdict == "dead":
            log.error("dead_letter", **fields, reason=outcome.detail)
        else:
            log.warning("retry_scheduled", **fields, reason=outcome.detail, immediate=outcome.verdict == "resend",
                        min_delay_s=outcome.min_delay_s or None)


# -- operator commands: dead letters ------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    insert_id: str
    post_id: str
    subreddit: str | None
    attempts: int
    reason: str
    http_status: int | None
    created_at: datetime  # when the post was recorded


def dead_letters(engine: Engine) -> list[DeadLetter]:
    """Every dead letter, oldest first, with the reason Amplitude (or the payload check) gave."""
    stmt = (
        sa.select(event_outbox, posts.c.subreddit)
        .outerjoin(posts, posts.c.id == event_outbox.c.post_id)
        .where(event_outbox.c.status == "dead")
        .order_by(event_outbox.c.created_at, event_outbox.c.insert_id)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    return [
        DeadLetter(
            insert_id=row["insert_id"],
            post_id=row["post_id"],
            subreddit=row["subreddit"],
            attempts=row["attempts"],
            reason=row["last_error"] or "",
            http_status=row["response"].get("code") if isinstance(row["response"], dict) else None,
            created_at=row["created_at"],
        )
        for row in rows
    ]


class NotDeadLetters(ValueError):
    """Some insert_ids given to requeue_dead are not dead letters; nothing was changed."""


def requeue_dead(engine: Engine, insert_ids: Sequence[str] | None) -> list[str]:
    """Put dead letters back to pending after a fix: the same insert_id and payload, attempts kept,
    due now; their dead_letter incidents are resolved in the same transaction. insert_ids None means
    all of them. Raises NotDeadLetters (changing nothing) if any given id is not a dead letter.
    Returns the insert_ids requeued, sorted."""
    with engine.begin() as conn:
        if insert_ids is not None:
            wanted = sorted(set(insert_ids))
            statuses = dict(
                conn.execute(
                    sa.select(event_outbox.c.insert_id, event_outbox.c.status)
                    .where(event_outbox.c.insert_id.in_(wanted))
                    .with_for_update()
                ).all()
            )
            wrong = [f"{i} ({statuses.get(i, 'unknown')})" for i in wanted if statuses.get(i) != "dead"]
            if wrong:
                raise NotDeadLetters(f"not dead letters: {', '.join(wrong[:10])}; nothing changed")
        stmt = (
            sa.update(event_outbox)
            .where(event_outbox.c.status == "dead")
            .values(status="pending", next_attempt_at=sa.func.now(), lease_owner=None, lease_expires_at=None)
            .returning(event_outbox.c.insert_id)
        )
        if insert_ids is not None:
            stmt = stmt.where(event_outbox.c.insert_id.in_(wanted))
        requeued = sorted(conn.scalars(stmt))
        if requeued:
            conn.execute(
                sa.update(incidents)
                .where(incidents.c.kind == "dead_letter", incidents.c.key.in_(requeued),
                       incidents.c.resolved_at.is_(None))
                .values(resolved_at=sa.func.now())
            )
    for insert_id in requeued:
        log.info("dead_letter_requeued", insert_id=insert_id)
    return requeued
