"""The fake Amplitude server, over real HTTP: raw `requests` and the real amplitude-analytics SDK.

The SDK tests pin down the SDK behaviours the outbox relies on (research/amplitude.md §3): which
answers give a callback, which are retried, and which lose events silently.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from amplitude import Amplitude, BaseEvent, Config

from reddit_dagster.simulators.fake_amplitude import INVALID_IDS, FakeAmplitude

pytestmark = pytest.mark.timeout(60)

KEY = "test-amplitude-key"
V2 = "/2/httpapi"


def make_event(i: int, **fields: Any) -> dict[str, Any]:
    event = {
        "event_type": "Test Event",
        "user_id": f"user-{i:04d}",
        "insert_id": f"ins-{i}",
        "time": 1_700_000_000_000 + i,
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


def post(fake: FakeAmplitude, body: Any, path: str = V2, timeout: float = 5) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(fake.url + path, data=data, headers={"Content-Type": "application/json"}, timeout=timeout)


def send(fake: FakeAmplitude, events: list[dict[str, Any]], **extra: Any) -> requests.Response:
    return post(fake, {"api_key": KEY, "events": events, **extra})


# -- acceptance and validation over raw HTTP ---------------------------------------------------


def test_valid_request_is_stored_and_answered_like_amplitude(fake_amplitude: FakeAmplitude) -> None:
    events = [make_event(1), make_event(2, user_id=None, device_id="device-0002")]
    raw = json.dumps({"api_key": KEY, "events": events}).encode()
    before_ms = int(time.time() * 1000)

    response = post(fake_amplitude, raw)

    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200
    assert body["events_ingested"] == 2
    assert body["payload_size_bytes"] == len(raw)
    assert before_ms <= body["server_upload_time"] <= int(time.time() * 1000)
    assert fake_amplitude.stored == events
    assert fake_amplitude.stored_insert_ids() == ["ins-1", "ins-2"]
    assert fake_amplitude.received_events == 2
    [logged] = fake_amplitude.requests_log
    assert logged["path"] == V2 and logged["status"] == 200 and logged["n_events"] == 2
    assert logged["fault"] is None
    assert KEY not in json.dumps(fake_amplitude.requests_log)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", {"code": 400, "error": "Missing request body"}),
        (b"{not json", {"code": 400, "error": "Invalid JSON request body"}),
        (b"[1, 2]", {"code": 400, "error": "Invalid JSON request body"}),
        (
            json.dumps({"events": [make_event(1)]}).encode(),
            {"code": 400, "error": "Request missing required field", "missing_field": "api_key"},
        ),
        (
            json.dumps({"api_key": KEY}).encode(),
            {"code": 400, "error": "Request missing required field", "missing_field": "events"},
        ),
        (
            json.dumps({"api_key": "some-other-secret-key", "events": [make_event(1)]}).encode(),
            {"code": 400, "error": "Invalid API key: som***"},
        ),
        (
            json.dumps({"api_key": KEY, "events": {"a": 1}}).encode(),
            {"code": 400, "error": "Invalid event JSON"},
        ),
    ],
    ids=["empty", "not-json", "not-object", "no-api-key", "no-events", "unknown-key", "events-not-list"],
)
def test_request_level_errors(fake_amplitude: FakeAmplitude, raw: bytes, expected: dict[str, Any]) -> None:
    response = post(fake_amplitude, raw)

    assert response.status_code == 400
    assert response.json() == expected
    assert fake_amplitude.stored == []
    assert "some-other-secret-key" not in response.text


def test_unknown_path_is_rejected(fake_amplitude: FakeAmplitude) -> None:
    response = post(fake_amplitude, {"api_key": KEY, "events": [make_event(1)]}, path="/2/httpapi/")

    assert response.status_code == 400
    assert response.json() == {"code": 400, "error": "Invalid request path"}
    assert fake_amplitude.stored == []


def test_per_event_errors_list_indexes_and_ingest_nothing(fake_amplitude: FakeAmplitude) -> None:
    events = [
        make_event(0),
        make_event(1, event_type=None),
        make_event(2, time="2024-01-01T00:00:00Z"),
        make_event(3, time=1.7e12),
        make_event(4, user_id="bob"),
        make_event(5, user_id=None, device_id="NULL"),
        make_event(6, user_id=None),
    ]

    response = send(fake_amplitude, events)

    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "error": "Invalid field values on some events",
        "events_with_missing_fields": {"event_type": [1], "device_id": [6]},
        "events_with_invalid_fields": {"time": [2, 3]},
        "events_with_invalid_id_lengths": {"user_id": [4], "device_id": [5]},
    }
    assert fake_amplitude.stored == []
    assert fake_amplitude.received_events == 0


@pytest.mark.parametrize("placeholder", sorted(INVALID_IDS))
def test_placeholder_ids_are_rejected_case_insensitively(fake_amplitude: FakeAmplitude, placeholder: str) -> None:
    response = send(fake_amplitude, [make_event(1, user_id=placeholder.upper())])

    assert response.status_code == 400
    assert response.json()["events_with_invalid_id_lengths"] == {"user_id": [0]}
    assert fake_amplitude.stored == []


def test_invalid_id_is_stripped_when_another_id_remains(fake_amplitude: FakeAmplitude) -> None:
    response = send(fake_amplitude, [make_event(1, user_id="Unknown", device_id="device-0001")])

    assert response.status_code == 200
    [stored] = fake_amplitude.stored
    assert "user_id" not in stored
    assert stored["device_id"] == "device-0001"


def test_min_id_length_option_allows_short_ids(fake_amplitude: FakeAmplitude) -> None:
    assert send(fake_amplitude, [make_event(1, user_id="bob")]).status_code == 400

    response = send(fake_amplitude, [make_event(1, user_id="bob")], options={"min_id_length": 3})

    assert response.status_code == 200
    assert fake_amplitude.stored[0]["user_id"] == "bob"


def test_long_strings_are_stored_truncated_to_1024(fake_amplitude: FakeAmplitude) -> None:
    long = "x" * 3000
    event = make_event(1, event_properties={"title": long, "tags": [long], "nested": {"a": long}, "n": 5})

    assert send(fake_amplitude, [event]).status_code == 200

    properties = fake_amplitude.stored[0]["event_properties"]
    assert properties == {"title": "x" * 1024, "tags": ["x" * 1024], "nested": {"a": "x" * 1024}, "n": 5}


def test_gzip_body_is_accepted(fake_amplitude: FakeAmplitude) -> None:
    import gzip

    raw = gzip.compress(json.dumps({"api_key": KEY, "events": [make_event(1)]}).encode())
    response = requests.post(
        fake_amplitude.url + V2,
        data=raw,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=5,
    )

    assert response.status_code == 200
    assert fake_amplitude.stored_insert_ids() == ["ins-1"]


# -- dedupe -------------------------------------------------------------------------------------


def test_same_insert_id_is_stored_once_and_still_answered_200(fake_amplitude: FakeAmplitude) -> None:
    first = send(fake_amplitude, [make_event(1)])
    again = send(fake_amplitude, [make_event(1, event_properties={"resend": True}), make_event(1)])

    assert first.status_code == again.status_code == 200
    assert again.json()["events_ingested"] == 2
    assert fake_amplitude.stored == [make_event(1)]
    assert fake_amplitude.count_by_insert_id() == {"ins-1": 1}
    assert fake_amplitude.deduped == 2
    assert fake_amplitude.received_events == 3
    assert [entry["n_stored"] for entry in fake_amplitude.requests_log] == [1, 0]


def test_dedupe_is_scoped_to_device_or_user_and_api_key() -> None:
    with FakeAmplitude(api_keys={KEY, "second-project-key"}) as fake:
        same = "shared-insert-id"
        events = [
            make_event(1, insert_id=same, device_id="device-0001"),
            make_event(2, insert_id=same, device_id="device-0002"),
            make_event(3, insert_id=same),  # user-only: scope "user:user-0003"
            make_event(4, insert_id=same),  # another user
            make_event(3, insert_id=same, device_id="device-0001"),  # same device as #1: duplicate
            make_event(5, insert_id=same, user_id="user-0003"),  # same user, no device: duplicate of #3
        ]
        assert send(fake, events).status_code == 200
        other_project = post(fake, {"api_key": "second-project-key", "events": [make_event(9, insert_id=same)]})

        assert other_project.status_code == 200
        assert fake.count_by_insert_id() == {same: 5}
        assert [e.get("device_id") or e["user_id"] for e in fake.stored] == [
            "device-0001",
            "device-0002",
            "user-0003",
            "user-0004",
            "user-0009",
        ]
        assert fake.deduped == 2


def test_events_without_insert_id_are_never_deduped(fake_amplitude: FakeAmplitude) -> None:
    send(fake_amplitude, [make_event(1, insert_id=None)] * 2)

    assert len(fake_amplitude.stored) == 2
    assert fake_amplitude.deduped == 0


# -- limits -------------------------------------------------------------------------------------


def test_more_than_max_events_is_413_and_ingests_nothing() -> None:
    with FakeAmplitude(max_events=5, eps_threshold=0) as fake:
        too_many = send(fake, [make_event(i) for i in range(6)])
        just_enough = send(fake, [make_event(i) for i in range(5)])

        assert too_many.status_code == 413
        assert too_many.json() == {"code": 413, "error": "Payload too large"}
        assert just_enough.status_code == 200
        assert fake.stored_insert_ids() == [f"ins-{i}" for i in range(5)]


def test_body_over_max_bytes_is_413_on_v2_but_fits_in_batch() -> None:
    with FakeAmplitude(max_bytes=2_000) as fake:
        big = [
            make_event(1, event_properties={"text": "y" * 1000}),
            make_event(2, event_properties={"t": "z" * 1000}),
        ]

        on_v2 = send(fake, big)
        on_batch = post(fake, {"api_key": KEY, "events": big}, path="/batch")

        assert on_v2.status_code == 413
        assert on_v2.json() == {"code": 413, "error": "Payload too large"}
        assert on_batch.status_code == 200
        assert fake.stored_insert_ids() == ["ins-1", "ins-2"]


def test_default_limits_2000_events_and_1mb() -> None:
    with FakeAmplitude(eps_threshold=0) as fake:
        assert send(fake, [make_event(i) for i in range(2001)]).status_code == 413
        padding = {"p": "q" * 1000}
        over_1mb = [make_event(i, event_properties=padding) for i in range(1000)]
        assert send(fake, over_1mb).status_code == 413
        assert post(fake, {"api_key": KEY, "events": over_1mb}, path="/batch").status_code == 200
        assert len(fake.stored) == 1000


def test_too_many_events_per_user_is_429_with_throttle_details() -> None:
    # 10 events per 10 s per id: a generous window keeps the test independent of machine speed.
    with FakeAmplitude(eps_threshold=1, eps_window_s=10) as fake:
        assert send(fake, [make_event(i, user_id="busy-user", insert_id=f"a{i}") for i in range(10)]).status_code == 200
        events = [
            make_event(0, user_id="calm-user", device_id="calm-device"),
            make_event(1, user_id="busy-user", insert_id="b1"),
            make_event(2, user_id=None, device_id="busy-device", insert_id="c"),
        ]
        events += [make_event(3 + i, user_id=None, device_id="busy-device", insert_id=f"d{i}") for i in range(10)]

        throttled = send(fake, events)

        assert throttled.status_code == 429
        assert throttled.json() == {
            "code": 429,
            "error": "Too many requests for some devices and users",
            "eps_threshold": 1,
            "throttled_users": {"busy-user": 1},
            "throttled_devices": {"busy-device": 1},
            "throttled_events": list(range(1, 13)),
        }
        assert len(fake.stored) == 10
        assert send(fake, [events[0]]).status_code == 200
        assert len(fake.stored) == 11


def test_eps_threshold_zero_disables_throttling() -> None:
    with FakeAmplitude(eps_threshold=0) as fake:
        response = send(fake, [make_event(i, user_id="busy-user") for i in range(500)])

        assert response.status_code == 200
        assert len(fake.stored) == 500


# -- faults over raw HTTP -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "502", "504"])
def test_5xx_fault_stores_then_fails_and_a_resend_is_deduped(fake_amplitude: FakeAmplitude, kind: str) -> None:
    fake_amplitude.fail_next(kind)

    failed = send(fake_amplitude, [make_event(1)])
    resent = send(fake_amplitude, [make_event(1)])

    assert failed.status_code == int(kind)
    assert failed.json()["code"] == int(kind)
    assert resent.status_code == 200
    assert fake_amplitude.count_by_insert_id() == {"ins-1": 1}
    assert fake_amplitude.deduped == 1
    assert [e["fault"] for e in fake_amplitude.requests_log] == [kind, None]


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [
        ("503", 503, {"code": 503, "error": "Service Unavailable"}),
        ("413", 413, {"code": 413, "error": "Payload too large"}),
        ("invalid_key", 400, {"code": 400, "error": "Invalid API key: tes***"}),
        (
            "429",
            429,
            {"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": 30},
        ),
        (
            "429_throttled",
            429,
            {
                "code": 429,
                "error": "Too many requests for some devices and users",
                "eps_threshold": 30,
                "throttled_users": {"user-0001": 31, "user-0002": 31},
                "throttled_devices": {},
                "throttled_events": [0, 1],
            },
        ),
    ],
)
def test_rejecting_faults_store_nothing(
    fake_amplitude: FakeAmplitude, kind: str, status: int, body: dict[str, Any]
) -> None:
    fake_amplitude.fail_next(kind)

    response = send(fake_amplitude, [make_event(1), make_event(2)])

    assert response.status_code == status
    assert response.json() == body
    assert fake_amplitude.stored == []
    assert send(fake_amplitude, [make_event(1), make_event(2)]).status_code == 200
    assert fake_amplitude.count_by_insert_id() == {"ins-1": 1, "ins-2": 1}


@pytest.mark.parametrize(("kind", "stored"), [("drop", 0), ("store_then_drop", 1)])
def test_dropped_connection_faults(fake_amplitude: FakeAmplitude, kind: str, stored: int) -> None:
    fake_amplitude.fail_next(kind)

    with pytest.raises(requests.ConnectionError):
        send(fake_amplitude, [make_event(1)])

    assert len(fake_amplitude.stored) == stored
    assert fake_amplitude.requests_log[-1]["status"] is None
    assert fake_amplitude.requests_log[-1]["fault"] == kind


def test_non_json_200_fault_stores_and_answers_html(fake_amplitude: FakeAmplitude) -> None:
    fake_amplitude.fail_next("non_json_200")

    response = send(fake_amplitude, [make_event(1)])

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html"
    with pytest.raises(ValueError):
        response.json()
    assert fake_amplitude.stored_insert_ids() == ["ins-1"]


def test_slow_fault_stores_before_answering_late() -> None:
    with FakeAmplitude(slow_s=1.0) as fake:
        fake.fail_next("slow")

        with pytest.raises(requests.Timeout):
            post(fake, {"api_key": KEY, "events": [make_event(1)]}, timeout=0.3)

        assert fake.stored_insert_ids() == ["ins-1"]  # stored before the client gave up
        assert fake.wait_for_requests(1, timeout=5)
        assert fake.requests_log[0]["status"] == 200 and fake.requests_log[0]["fault"] == "slow"


def test_stop_aborts_a_slow_answer_promptly() -> None:
    fake = FakeAmplitude(slow_s=30.0)
    fake.start()
    fake.fail_next("slow")
    outcome: list[BaseException | requests.Response] = []

    def call() -> None:
        try:
            outcome.append(send(fake, [make_event(1)]))
        except requests.RequestException as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    assert fake.wait_for_stored(1, timeout=5)
    started = time.monotonic()
    fake.stop()
    caller.join(timeout=5)

    assert time.monotonic() - started < 3
    assert not caller.is_alive()
    assert isinstance(outcome[0], requests.ConnectionError)


def test_fail_next_counts_and_then_recovers(fake_amplitude: FakeAmplitude) -> None:
    fake_amplitude.fail_next("503", count=2)

    statuses = [send(fake_amplitude, [make_event(1)]).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]
    fake_amplitude.fail_next("500", count=3)
    fake_amplitude.set_fault_rate(1.0, ["503"])
    fake_amplitude.clear_faults()
    assert send(fake_amplitude, [make_event(2)]).status_code == 200


def test_fault_rate_is_deterministic_for_a_seed() -> None:
    def statuses(seed: int) -> list[int]:
        with FakeAmplitude(seed=seed) as fake:
            fake.set_fault_rate(0.5, ["503", "500"])
            return [send(fake, [make_event(i)]).status_code for i in range(20)]

    first, again, other_seed = statuses(7), statuses(7), statuses(8)

    assert first == again
    assert first != other_seed
    assert {200, 500, 503} <= set(first)


def test_bad_fault_requests_are_refused(fake_amplitude: FakeAmplitude) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        fake_amplitude.fail_next("418")
    with pytest.raises(ValueError, match="within"):
        fake_amplitude.set_fault_rate(1.5, ["500"])


def test_stopped_server_refuses_connections() -> None:
    fake = FakeAmplitude()
    url = fake.start()
    fake.stop()

    with pytest.raises(requests.ConnectionError):
        requests.post(url + V2, json={"api_key": KEY, "events": [make_event(1)]}, timeout=2)


# -- the real SDK against the fake ----------------------------------------------------------------


class Callbacks:
    """Collects SDK callbacks (they run on the SDK's pool threads)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self._changed = threading.Condition()

    def __call__(self, event: BaseEvent, code: int, message: str | None) -> None:
        with self._changed:
            self.calls.append((event.insert_id, code, message or ""))
            self._changed.notify_all()

    def wait_for(self, n: int, timeout: float = 10) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.calls) >= n, timeout=timeout)


@contextmanager
def sdk_client(fake: FakeAmplitude, api_key: str = KEY, **config: Any) -> Iterator[tuple[Amplitude, Callbacks]]:
    callbacks = Callbacks()
    settings: dict[str, Any] = {"flush_interval_millis": 100, "flush_max_retries": 3} | config
    client = Amplitude(api_key, Config(server_url=fake.url + V2, callback=callbacks, **settings))
    try:
        yield client, callbacks
    finally:
        client.shutdown()


def track(client: Amplitude, *indexes: int, **fields: Any) -> None:
    for i in indexes:
        params = {"user_id": f"user-{i:04d}", "insert_id": f"ins-{i}", "time": 1_700_000_000_000 + i} | fields
        client.track(BaseEvent("Test Event", **params))


def test_sdk_success_gives_a_callback_per_event(fake_amplitude: FakeAmplitude) -> None:
    with sdk_client(fake_amplitude) as (client, callbacks):
        track(client, 1, 2, 3)

        assert callbacks.wait_for(3)

    assert sorted(callbacks.calls) == [(f"ins-{i}", 200, "Event sent successfully.") for i in (1, 2, 3)]
    assert sorted(fake_amplitude.stored_insert_ids()) == ["ins-1", "ins-2", "ins-3"]
    assert fake_amplitude.stored[0]["library"] == "amplitude-python/1.3.0"


@pytest.mark.parametrize("kind", ["500", "502", "504"])
def test_sdk_retries_a_5xx_after_store_and_dedupe_keeps_one(fake_amplitude: FakeAmplitude, kind: str) -> None:
    fake_amplitude.fail_next(kind)
    with sdk_client(fake_amplitude) as (client, callbacks):
        track(client, 1, 2)

        assert callbacks.wait_for(2)

    assert {code for _, code, _ in callbacks.calls} == {200}
    assert fake_amplitude.count_by_insert_id() == {"ins-1": 1, "ins-2": 1}
    assert fake_amplitude.deduped == 2
    # The retries may go out one per request: each event's retry falls due at its own millisecond.
    first, *retries = fake_amplitude.requests_log
    assert (first["status"], first["n_events"]) == (int(kind), 2)
    assert {entry["status"] for entry in retries} == {200}
    assert sum(entry["n_events"] for entry in retries) == 2


@pytest.mark.parametrize("kind", ["503", "429"])
def test_sdk_retries_503_and_bare_429_promptly(fake_amplitude: FakeAmplitude, kind: str) -> None:
    fake_amplitude.fail_next(kind)
    with sdk_client(fake_amplitude) as (client, callbacks):
        track(client, 1)

        assert callbacks.wait_for(1)

    assert callbacks.calls == [("ins-1", 200, "Event sent successfully.")]
    assert fake_amplitude.count_by_insert_id() == {"ins-1": 1}
    assert fake_amplitude.deduped == 0
    assert [e["status"] for e in fake_amplitude.requests_log] == [int(kind), 200]


def test_sdk_gives_up_after_max_retries_with_a_callback(fake_amplitude: FakeAmplitude) -> None:
    fake_amplitude.fail_next("503", count=10)
    with sdk_client(fake_amplitude, flush_max_retries=2) as (client, callbacks):
        track(client, 1)

        assert callbacks.wait_for(1)

    assert callbacks.calls == [("ins-1", 503, "Event reached max retry times 2.")]
    assert len(fake_amplitude.requests_log) == 2


@pytest.mark.parametrize(
    ("kind", "stored"), [("store_then_drop", ["ins-1"]), ("non_json_200", ["ins-1"]), ("drop", [])]
)
def test_sdk_loses_events_silently_on_dropped_connection_or_non_json_200(
    fake_amplitude: FakeAmplitude, kind: str, stored: list[str]
) -> None:
    fake_amplitude.fail_next(kind)
    with sdk_client(fake_amplitude) as (client, callbacks):
        track(client, 1)
        assert fake_amplitude.wait_for_requests(1, timeout=10)
    # shutdown() has waited for the in-flight send: any callback or retry would have happened.

    assert callbacks.calls == []
    assert fake_amplitude.stored_insert_ids() == stored
    assert len(fake_amplitude.requests_log) == 1


def test_sdk_drops_everything_without_callback_on_invalid_key(fake_amplitude: FakeAmplitude) -> None:
    with sdk_client(fake_amplitude, api_key="wrong-key-for-test") as (client, callbacks):
        track(client, 1, 2)
        assert fake_amplitude.wait_for_requests(1, timeout=10)
    fake_amplitude.fail_next("invalid_key")
    with sdk_client(fake_amplitude) as (client, fault_callbacks):
        track(client, 3)
        assert fake_amplitude.wait_for_requests(2, timeout=10)

    assert callbacks.calls == fault_callbacks.calls == []
    assert fake_amplitude.stored == []
    assert [e["status"] for e in fake_amplitude.requests_log] == [400, 400]


def test_sdk_dead_letters_invalid_events_and_resends_the_rest(fake_amplitude: FakeAmplitude) -> None:
    with sdk_client(fake_amplitude) as (client, callbacks):
        track(client, 1)
        track(client, 2, user_id="bob")  # the SDK does not check id length; the server does
        track(client, 3)

        assert callbacks.wait_for(3)

    assert sorted(callbacks.calls) == [
        ("ins-1", 200, "Event sent successfully."),
        ("ins-2", 400, "Invalid field values on some events"),
        ("ins-3", 200, "Event sent successfully."),
    ]
    assert sorted(fake_amplitude.stored_insert_ids()) == ["ins-1", "ins-3"]


def test_sdk_splits_a_batch_after_413(fake_amplitude: FakeAmplitude) -> None:
    fake_amplitude.fail_next("413")
    with sdk_client(fake_amplitude, flush_queue_size=4) as (client, callbacks):
        track(client, 1, 2, 3, 4)

        assert callbacks.wait_for(4)

    assert {code for _, code, _ in callbacks.calls} == {200}
    assert fake_amplitude.count_by_insert_id() == {f"ins-{i}": 1 for i in (1, 2, 3, 4)}
    first, *retries = fake_amplitude.requests_log
    assert first["status"] == 413 and first["n_events"] == 4
    assert all(entry["n_events"] < 4 for entry in retries)


def test_sdk_gives_a_413_callback_for_a_single_event(fake_amplitude: FakeAmplitude) -> None:
    fake_amplitude.fail_next("413")
    with sdk_client(fake_amplitude) as (client, callbacks):
        track(client, 1)

        assert callbacks.wait_for(1)

    assert callbacks.calls == [("ins-1", 413, "Payload too large")]
    assert fake_amplitude.stored == []


def test_sdk_retries_a_refused_connection_then_calls_back_with_minus_one() -> None:
    fake = FakeAmplitude()
    fake.start()
    fake.stop()  # the port is now closed: connection refused
    with sdk_client(fake, flush_max_retries=2) as (client, callbacks):
        track(client, 1)

        assert callbacks.wait_for(1)

    assert callbacks.calls == [("ins-1", -1, "Event reached max retry times 2.")]


def test_sdk_parks_throttled_events_for_30s_and_shutdown_flushes_them() -> None:
    # 10 events per 10 s per id: 11 in one batch are throttled however fast the machine is.
    with FakeAmplitude(eps_threshold=1, eps_window_s=10) as fake:
        with sdk_client(fake) as (client, callbacks):
            track(client, *range(11), user_id="same-user")
            assert fake.wait_for_requests(1, timeout=10)
            track(client, 99)  # a later batch: the throttled events are not in it
            assert fake.wait_for_stored(1, timeout=10)
            assert callbacks.wait_for(1)

            assert [(e["status"], e["n_events"]) for e in fake.requests_log] == [(429, 11), (200, 1)]
            assert callbacks.calls == [("ins-99", 200, "Event sent successfully.")]
            fake.eps_threshold = 0  # let shutdown's final flush, which ignores the 30 s delay, land

    assert [(e["status"], e["n_events"]) for e in fake.requests_log][2:] == [(200, 11)]
    assert sorted(fake.stored_insert_ids()) == sorted(f"ins-{i}" for i in [*range(11), 99])
    assert len(callbacks.calls) == 12


# -- out-of-process control -----------------------------------------------------------------------


def test_http_control_endpoints(fake_amplitude: FakeAmplitude) -> None:
    fault = requests.post(fake_amplitude.url + "/_fake/faults", json={"kind": "503", "count": 1}, timeout=5)
    assert fault.json() == {"code": 200, "ok": True}
    assert send(fake_amplitude, [make_event(1)]).status_code == 503
    assert send(fake_amplitude, [make_event(1)]).status_code == 200
    rate = requests.post(fake_amplitude.url + "/_fake/faults", json={"rate": 1.0, "kinds": ["503"]}, timeout=5)
    assert rate.status_code == 200
    assert send(fake_amplitude, [make_event(2)]).status_code == 503
    bad = requests.post(fake_amplitude.url + "/_fake/faults", json={"kind": "nope"}, timeout=5)
    assert bad.status_code == 400 and "unknown fault kind" in bad.json()["error"]

    state = requests.get(fake_amplitude.url + "/_fake/state", timeout=5).json()

    assert state == {
        "code": 200,
        "stored": 1,
        "deduped": 0,
        "received_events": 1,
        "requests": 3,
        "recent": [make_event(1)],
    }
    events = requests.get(fake_amplitude.url + "/_fake/events", timeout=5).json()["events"]
    assert events == [make_event(1)]


def test_runs_as_a_module_until_sigterm() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reddit_dagster.simulators.fake_amplitude",
            "--port",
            "0",
            "--api-key",
            "demo-key",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = banner.split()[3]
        assert url.startswith("http://127.0.0.1:")
        body = {"api_key": "demo-key", "events": [make_event(1)]}
        assert requests.post(url + V2, json=body, timeout=5).status_code == 200
        assert requests.get(url + "/_fake/state", timeout=5).json()["stored"] == 1

        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=10) == 0
        assert "SIGTERM" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
