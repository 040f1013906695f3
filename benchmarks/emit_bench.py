"""Emit throughput: events per second acknowledged by the fake Amplitude through emit_due, against a
naive baseline that POSTs one event per request with `requests` to the same kind of fake.

Both send the same frozen payloads from the outbox of a throwaway database; each side gets a fresh
fake (so neither is answered from the other's dedupe set). The baseline is timed over its first
NAIVE_EVENTS events only (it is slow by design) and compared per event. Measured twice: on
127.0.0.1, where a request costs a few milliseconds, and with a WAN-like delay on every answer.
"""

from __future__ import annotations

import time

import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from benchmarks.common import row, throwaway_database
from benchmarks.record_bench import fresh_posts
from reddit_dagster.emit import emit_due
from reddit_dagster.schema import event_outbox
from reddit_dagster.settings import Settings
from reddit_dagster.simulators.fake_amplitude import V2_PATH, FakeAmplitude
from reddit_dagster.store import record_new_posts

EVENTS = 10_000
NAIVE_EVENTS = 1_000
# A round trip to Amplitude's servers from a typical host; the fake adds it to every answer in the
# second measurement (its "slow" fault with slow_s = this), for both sides alike.
WAN_LATENCY_S = 0.05
KEY = "bench-amplitude-key"


def naive_send(url: str, payloads: list[dict]) -> int:
    """One POST per event, as a first attempt at an integration would do it."""
    acknowledged = 0
    with requests.Session() as session:
        for payload in payloads:
            answer = session.post(url, json={"api_key": KEY, "events": [payload]}, timeout=10)
            acknowledged += answer.status_code == 200
    return acknowledged


def measure(engine: Engine, payloads: list[dict], naive_events: int, latency_s: float) -> tuple[float, float, int]:
    """(emit_due events/s, naive events/s, requests emit_due made); latency_s delays every answer."""
    with engine.begin() as conn:  # every event pending again, as freshly recorded
        conn.execute(sa.update(event_outbox).values(status="pending", attempts=0, sent_at=None,
                                                    next_attempt_at=sa.func.now(), response=None))
    with FakeAmplitude(api_keys={KEY}, eps_threshold=0, slow_s=latency_s) as fake:
        if latency_s:
            fake.set_fault_rate(1.0, ["slow"])  # "slow" = the genuine answer, latency_s late
        settings = Settings(amplitude_api_key=KEY, amplitude_server_url=fake.url + V2_PATH)
        start = time.perf_counter()
        result = emit_due(engine, settings)
        ours_s = time.perf_counter() - start
        assert result.sent == EVENTS and len(fake.stored) == EVENTS, result.summary()
        requests_made = len(fake.requests_log)
    with FakeAmplitude(api_keys={KEY}, eps_threshold=0, slow_s=latency_s) as fake:
        if latency_s:
            fake.set_fault_rate(1.0, ["slow"])
        start = time.perf_counter()
        acknowledged = naive_send(fake.url + V2_PATH, payloads[:naive_events])
        naive_s = time.perf_counter() - start
        assert acknowledged == naive_events == len(fake.stored)
    return EVENTS / ours_s, naive_events / naive_s, requests_made


def main() -> dict[str, float]:
    print(f"emit: {EVENTS:,} pending events through emit_due vs naive one-event POSTs to the same fake")
    figures: dict[str, float] = {}
    with throwaway_database() as (_url, engine):
        record_new_posts(engine, fresh_posts(EVENTS))
        with engine.connect() as conn:
            payloads = list(conn.scalars(sa.select(event_outbox.c.payload).limit(NAIVE_EVENTS)))
        for label, naive_events, latency_s in (("127.0.0.1", NAIVE_EVENTS, 0.0),
                                               (f"+{WAN_LATENCY_S * 1000:.0f} ms per answer", 200, WAN_LATENCY_S)):
            ours, naive, requests_made = measure(engine, payloads, naive_events, latency_s)
            row(f"emit_due, {label}", f"{ours:,.0f} events/s", f"{requests_made} requests for {EVENTS:,} events")
            row(f"naive one requests.post per event, {label}", f"{naive:,.0f} events/s",
                f"timed over {naive_events:,} events")
            row(f"ratio emit_due / naive, {label}", f"{ours / naive:.0f}x", "goal >= 50x")
            key = "local" if not latency_s else "wan"
            figures |= {f"emit_{key}_events_per_s": ours, f"naive_{key}_events_per_s": naive,
                        f"emit_{key}_ratio": ours / naive}
    return figures


if __name__ == "__main__":
    main()
