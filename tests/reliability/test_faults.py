"""Faults at both fakes at ~20% while posts arrive in bursts, then a clean recovery phase.

Pollers and emitters are long-lived processes (workers.py) with short backoffs, so a phase of a few
seconds holds hundreds of faulted requests; the recovery ends with the real `reddit-dagster` CLI.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine

from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit
from tests.reliability.ground_truth import check_ground_truth
from tests.reliability.harness import (
    SUB,
    Workers,
    assert_clean_output,
    assert_restart_sends_nothing,
    live_ids,
    pending,
    pipeline_env,
    recorded,
    run_all,
    wait_until,
)

pytestmark = pytest.mark.timeout(240)

REDDIT_FAULTS = ["429_html", "429_json", "500", "502", "503", "504", "520", "522", "200_html",
                 "403_blocked_html", "malformed_json", "wrong_shape", "empty_page", "reset"]
# "slow" answers after the workers' 1 s request timeout (WORKER_REQUEST_TIMEOUT_S): stored, unacknowledged.
AMPLITUDE_FAULTS = ["500", "502", "503", "504", "429", "429_throttled", "slow", "store_then_drop", "drop",
                    "non_json_200"]
MIN_FAULT_PHASE_S = 8.0
MAX_FAULT_PHASE_S = 90.0
BURSTS_PER_S = 4


def test_faults_at_both_fakes_then_recovery(
    engine: Engine, fake_reddit_factory: Callable[..., FakeReddit],
    amplitude_factory: Callable[..., FakeAmplitude], child_env: dict[str, str],
    workers_factory: Callable[[dict[str, str]], Workers],
):
    rng = random.Random(11)
    reddit = fake_reddit_factory(ratelimit_budget=1_000_000, seed=5)
    reddit.slow_s = 1.0
    amplitude = amplitude_factory(slow_s=1.5, seed=5)
    env = pipeline_env(child_env, reddit, amplitude)
    reddit.add_posts(SUB, 120)
    reddit.set_fault_rate(0.2, REDDIT_FAULTS)
    amplitude.set_fault_rate(0.2, AMPLITUDE_FAULTS)

    workers = workers_factory(env | {"WORKER_REQUEST_TIMEOUT_S": "1.0", "WORKER_BATCH": "40"})
    for role in ("poll", "poll", "poll", "emit", "emit"):
        workers.start(role)

    def enough_faults() -> bool:
        kinds = {entry["fault"] for entry in amplitude.requests_log if entry["fault"]}
        failed = sum(1 for record in workers.records("poll") if record["error"])
        return len(kinds) >= 6 and failed >= 3

    started = time.monotonic()  # bursts of up to 150 posts while faults fly, until both fakes faulted enough
    while time.monotonic() - started < MIN_FAULT_PHASE_S or not enough_faults():
        assert time.monotonic() - started < MAX_FAULT_PHASE_S, "too few faults: is the fault injection on?"
        reddit.add_posts(SUB, rng.choice([0, 5, 20, 60, 150]))
        time.sleep(1 / BURSTS_PER_S)

    reddit.set_fault_rate(0.0, [])
    amplitude.clear_faults()
    live = live_ids(reddit)
    wait_until(lambda: recorded(engine) >= len(live) and pending(engine) == 0, 90,
               "the clean phase to record and send everything")
    assert set(workers.stop_all().values()) == {0}

    polls, emits = workers.records("poll"), workers.records("emit")
    reddit_faults = sum(1 for entry in reddit.requests_log if entry["status"] != 200)
    amplitude_faults = collections.Counter(entry["fault"] for entry in amplitude.requests_log if entry["fault"])
    failed_polls = [p for p in polls if p["error"]]
    print(f"faults: {reddit_faults} non-200 Reddit answers over {len(reddit.requests_log)} requests, "
          f"{len(failed_polls)} of {len(polls)} polls failed; Amplitude faults {dict(amplitude_faults)} over "
          f"{len(amplitude.requests_log)} requests; {sum(e['retried'] for e in emits)} events left for retry")
    assert len(failed_polls) >= 3 and not any(p["gap"] for p in polls)
    assert len(amplitude_faults) >= 6

    for done in run_all(env, ("poll",), ("emit",)):  # the CLI after recovery: clean, nothing left
        assert done.returncode == 0, done.stderr
        assert_clean_output(done)
    truth = check_ground_truth(engine, reddit, amplitude, "faults at 20% at both fakes, then recovery")
    assert truth.deduped > 0, "the store-then-drop and slow faults should have caused deduped resends"
    assert_restart_sends_nothing(env, engine, reddit, amplitude)
