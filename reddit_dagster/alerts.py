"""Alerts: every incident is posted once to ALERT_WEBHOOK_URL (Slack incoming-webhook JSON).

Incidents are opened where problems are found, once per (kind, key) until resolved
(store.open_incident): a failed run (automation.run_failure_sensor), a gap (ingest), a dead letter
or a rejected Amplitude key (emit), events near the 7-day dedupe window (emit), and events pending
past the warning threshold (open_stale_pending_incident, here). notify_open_incidents sends the
open incidents nobody has been told about, one message per kind, and stamps them notified_at;
a failed delivery is written to notify_error and retried by the next call. It is called after
polls and emissions (assets and CLI) and by alert_sensor, so alerts go out within a minute
without depending on any one path.

Once only: each kind's rows are claimed with FOR UPDATE SKIP LOCKED in a short transaction that
sends and stamps them, so two processes never post the same incident (a crash between the post
and the commit can repeat it once: at least once, never lost). Alerting never breaks the
pipeline: the receiver being down costs one bounded delivery attempt per call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
import tenacity
from sqlalchemy.engine import Engine

from reddit_dagster import logs, observe
from reddit_dagster.db import first_line
from reddit_dagster.schema import incidents
from reddit_dagster.settings import Settings
from reddit_dagster.store import open_incident, resolve_incidents

log = logs.get_logger(__name__)

TIMEOUT_S = 5.0
ATTEMPTS = 3
BACKOFF_S = 0.5
MAX_PER_MESSAGE = 100  # incidents stamped by one message; more go out in the next one
LISTED_PER_MESSAGE = 20  # incidents spelled out in one message, the rest counted
STALE_PENDING_INCIDENT = "stale_pending"
# Pending longer than this opens a stale_pending incident; also the default of the Dagster
# layer's PipelineResource.pending_warn_s and of its pending-age check's WARN.
PENDING_WARN_S = 3600

# What each kind means for the operator, in one line (README "Operating it" has the details).
ADVICE = {
    "run_failure": "A Dagster run failed; open the run in the Dagster UI. It closes when the job next succeeds.",
    "gap": "A walk reached the end of Reddit's listing without meeting a recorded post: posts may be lost. "
    "Run `reddit-dagster reconcile --subreddit S`, poll more often, then resolve the incident.",
    "dead_letter": "Amplitude rejected these events for good. `reddit-dagster dead-letters` shows why; "
    "after a fix, `reddit-dagster retry-dead --id ...`.",
    "amplitude_key_rejected": "Amplitude rejects AMPLITUDE_API_KEY; nothing is lost (events stay pending). "
    "Fix the key; the next successful send closes this.",
    STALE_PENDING_INCIDENT: "Events are waiting longer than the warning threshold: Amplitude is down, "
    "throttling, or the key is missing. Send them before Amplitude's 7-day dedupe window ends.",
    "near_dedupe_window": "Events first attempted nearly 7 days ago are held back; resend them deliberately "
    "with `reddit-dagster emit --allow-near-window`.",
}


class WebhookError(RuntimeError):
    """The webhook did not accept the message; one line, without the URL's secret path."""


class _Retryable(Exception):
    pass


@dataclass
class NotifyResult:
    notified: int = 0  # incidents delivered by this call
    messages: int = 0  # webhook posts that succeeded
    undelivered: int = 0  # incidents whose delivery failed this time (retried by the next call)
    error: str | None = None
    skipped_reason: str | None = None

    def summary(self) -> str:
        if self.skipped_reason:
            return f"alerts: {self.skipped_reason}"
        line = f"alerts: {self.notified} incident(s) notified in {self.messages} message(s)"
        if self.error:
            line += f"; {self.undelivered} undelivered ({self.error}), retried next time"
        return line


def post_webhook(url: str, text: str, *, timeout_s: float = TIMEOUT_S, attempts: int = ATTEMPTS,
                 backoff_s: float = BACKOFF_S) -> None:
    """POST {"text": text}; connection errors, timeouts, 429 and 5xx are retried (bounded).
    Raises WebhookError naming the host only: a webhook URL's path is its credential."""
    host = urlsplit(url).netloc or "the webhook"

    def once() -> None:
        try:
            response = requests.post(url, json={"text": text}, timeout=timeout_s, allow_redirects=False)
        except requests.RequestException as exc:
            raise _Retryable(f"{type(exc).__name__} posting to {host}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code} from {host}")
        if not 200 <= response.status_code < 300:
            body = " ".join(response.text[:100].split())
            raise WebhookError(logs.redact(f"HTTP {response.status_code} from {host}: {body!r}"))

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, attempts)),
        wait=tenacity.wait_exponential(multiplier=backoff_s, max=8 * backoff_s),
        retry=tenacity.retry_if_exception_type(_Retryable),
        reraise=True,
    )
    try:
        retrying(once)
    except _Retryable as exc:
        raise WebhookError(f"{exc} (after {attempts} attempts)") from None


def format_message(kind: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """Slack text for the open incidents of one kind: one line each (#id, key, message), then advice."""
    lines = [f"reddit_dagster: {len(rows)} new {kind} incident(s)"]
    for row in rows[:LISTED_PER_MESSAGE]:
        run = f" (run {row['run_id']})" if row.get("run_id") else ""
        lines.append(f"- #{row['id']} {row['key']}: {row['message'][:300]}{run}")
    if len(rows) > LISTED_PER_MESSAGE:
        lines.append(f"- ... and {len(rows) - LISTED_PER_MESSAGE} more (see the dashboard's incident list)")
    lines.append(ADVICE.get(kind, "See README, section \"Operating it\"."))
    return logs.redact("\n".join(lines))


def notify_open_incidents(engine: Engine, webhook_url: str | None, *, timeout_s: float = TIMEOUT_S,
                          attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S) -> NotifyResult:
    """Send every open incident not notified yet, one message per kind, and stamp notified_at.

    A failed delivery records notify_error on that kind's incidents and stops this call (the
    receiver is likely down; the next call retries them all). Raises only for database errors.
    """
    if not webhook_url:
        return NotifyResult(skipped_reason="ALERT_WEBHOOK_URL is not set; incidents are on the dashboard only")
    logs.add_secret(webhook_url)
    waiting = sa.and_(incidents.c.resolved_at.is_(None), incidents.c.notified_at.is_(None))
    with engine.connect() as conn:
        kinds = list(conn.scalars(sa.select(incidents.c.kind).where(waiting).distinct().order_by(incidents.c.kind)))
    result = NotifyResult()
    for kind in kinds:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.select(incidents.c.id, incidents.c.kind, incidents.c.key, incidents.c.message, incidents.c.run_id)
                .where(waiting, incidents.c.kind == kind)
                .order_by(incidents.c.id)
                .limit(MAX_PER_MESSAGE)
                .with_for_update(skip_locked=True)
            ).mappings().all()
            if not rows:
                continue  # another process is sending them right now
            ids = [row["id"] for row in rows]
            try:
                post_webhook(webhook_url, format_message(kind, rows), timeout_s=timeout_s, attempts=attempts,
                             backoff_s=backoff_s)
            except WebhookError as exc:
                conn.execute(sa.update(incidents).where(incidents.c.id.in_(ids)).values(notify_error=str(exc)[:500]))
                result.undelivered += len(ids)
                result.error = str(exc)
                log.warning("alert_undelivered", kind=kind, incident_ids=ids, reason=str(exc))
                break
            conn.execute(
                sa.update(incidents).where(incidents.c.id.in_(ids)).values(notified_at=sa.func.now(), notify_error=None)
            )
        result.notified += len(ids)
        result.messages += 1
        log.info("alert_sent", kind=kind, incident_ids=ids)
    return result


def open_stale_pending_incident(engine: Engine, warn_s: float) -> bool:
    """Open a stale_pending incident while events are pending longer than warn_s, resolve it once
    none is (a later recurrence is a new incident, alerted again). True if events are stale."""
    over, oldest = observe.pending_ages(engine, warn_s)
    if not over:
        resolve_incidents(engine, STALE_PENDING_INCIDENT)
        return False
    message = (
        f"{over} event(s) pending for over {warn_s / 3600:g} h (oldest {(oldest or 0) / 3600:.1f} h); "
        "Amplitude dedupes an insert_id for 7 days only"
    )
    if open_incident(engine, STALE_PENDING_INCIDENT, "event_outbox", message):
        log.warning("stale_pending", pending_over_warn=over, oldest_pending_age_s=round(oldest or 0, 1))
    return True


def check_and_notify(engine: Engine, webhook_url: str | None, *, pending_warn_s: float = PENDING_WARN_S
                     ) -> NotifyResult | None:
    """After a poll or an emission: the stale-pending check, then notify. Never raises: alerting
    must not fail the pipeline (a failure is logged and the next call tries again)."""
    try:
        open_stale_pending_incident(engine, pending_warn_s)
        return notify_open_incidents(engine, webhook_url)
    except Exception as exc:
        log.warning("alerting_failed", reason=f"{type(exc).__name__}: {logs.redact(first_line(exc))}")
        return None


def webhook_url_of(settings: Settings) -> str | None:
    """The webhook URL from Settings (a SecretStr there, so it never shows in a repr)."""
    secret = settings.alert_webhook_url
    return secret.get_secret_value() if secret is not None else None
