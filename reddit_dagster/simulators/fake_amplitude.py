"""A faithful fake of Amplitude's HTTP V2 (`POST /2/httpapi`) and Batch (`POST /batch`) APIs.

It behaves as research/amplitude.md §1-2 describes, because the `amplitude-analytics` SDK decides
what to retry, drop or call back from the response body's `code` and error fields:

- validation in Amplitude's order: invalid JSON, missing `api_key`/`events`, unknown key, more
  than `max_events` events or `max_bytes` bytes (413), then per-event checks (`event_type`,
  integer `time`, ids: too short or placeholder ids are stripped, an event left without an id is
  rejected). Any 400/413/429 ingests nothing from the request.
- string values longer than 1024 characters are stored truncated, as Amplitude does.
- dedupe on (api_key, device_id or "user:"+user_id, insert_id): a duplicate is answered 200 but
  not stored.
- per user_id/device_id throttling: more than `eps_threshold * eps_window_s` events for one id
  within `eps_window_s` gets a 429 with `throttled_events`; `eps_threshold=0` disables it.
- injectable faults (`fail_next`, `set_fault_rate`), deterministic for a given seed and request
  order. "Connection refused" is not a fault kind: call `stop()` and keep using `url`, whose port
  is then closed.

Every response body is JSON whose `code` equals the HTTP status (except the faults that exist to
break exactly that). API keys are never stored or logged; error bodies echo a masked key.

Out-of-process control (for `make demo` and subprocess tests):
  GET  /_fake/state   -> {"stored", "deduped", "received_events", "requests", "recent"}
  GET  /_fake/events  -> {"events": [every stored event]}
  POST /_fake/faults  {"kind": K, "count": N} | {"rate": R, "kinds": [K, ...]}

Run standalone: python -m reddit_dagster.simulators.fake_amplitude --port 8082 --api-key demo-key
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import random
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

V2_PATH = "/2/httpapi"
BATCH_PATH = "/batch"
INGEST_PATHS = (V2_PATH, BATCH_PATH)

MAX_STRING_LENGTH = 1024
DEFAULT_MIN_ID_LENGTH = 5
# Amplitude rejects these placeholder ids (compared case-insensitively).
INVALID_IDS = frozenset(
    {
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "",
        "00000000-0000-0000-0000-000000000000",
        "{}",
        "lmy47d",
        "0",
        "-1",
    }
)
RECENT_EVENTS_IN_STATE = 50

# Faults that process the request normally (storing valid events) and then spoil the answer.
AFTER_STORE_FAULTS = frozenset({"500", "502", "504", "slow", "store_then_drop", "non_json_200"})
# Faults that answer without processing (nothing stored).
INSTEAD_FAULTS = frozenset({"503", "429", "429_throttled", "drop", "invalid_key", "413"})
FAULT_KINDS = AFTER_STORE_FAULTS | INSTEAD_FAULTS

_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_THROTTLED_ERROR = "Too many requests for some devices and users"
_INVALID_EVENTS_ERROR = "Invalid field values on some events"


@dataclass
class _Answer:
    """What to send back: a JSON body with `status`, or `status=None` to close without answering."""

    status: int | None
    body: dict[str, Any] = field(default_factory=dict)
    stored: int = 0
    n_events: int = 0


@dataclass
class _Checked:
    """A request that passed validation: events ready to store (ids stripped, strings truncated)."""

    api_key: str
    events: list[dict[str, Any]]


def mask_key(api_key: object) -> str:
    """Enough of a key to tell keys apart in an error, never the whole secret."""
    if not isinstance(api_key, str) or len(api_key) < 8:
        return "***"
    return api_key[:3] + "***"


def invalid_api_key_body(api_key: object) -> dict[str, Any]:
    # The SDK recognises an invalid key only by this prefix ("Invalid API key:").
    return {"code": 400, "error": f"Invalid API key: {mask_key(api_key)}"}


def _truncate_strings(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_STRING_LENGTH]
    if isinstance(value, dict):
        return {key: _truncate_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_truncate_strings(item) for item in value]
    return value


def _is_valid_id(value: object, min_id_length: int) -> bool:
    return isinstance(value, str) and len(value) >= min_id_length and value.lower() not in INVALID_IDS


def _min_id_length(payload: dict[str, Any]) -> int:
    options = payload.get("options")
    if isinstance(options, dict):
        value = options.get("min_id_length")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return DEFAULT_MIN_ID_LENGTH


def _ids(event: dict[str, Any]) -> list[tuple[str, str]]:
    """The identities an event counts against for throttling: ("user", id) and/or ("device", id)."""
    ids = []
    if event.get("user_id") is not None:
        ids.append(("user", event["user_id"]))
    if event.get("device_id") is not None:
        ids.append(("device", event["device_id"]))
    return ids


def _dedupe_key(api_key: str, event: dict[str, Any]) -> tuple[str, str, str] | None:
    insert_id = event.get("insert_id")
    if insert_id is None:
        return None
    device = event.get("device_id")
    scope = device if device is not None else "user:" + event["user_id"]
    return (api_key, scope, insert_id)


def check_request(raw: bytes, *, api_keys: Iterable[str], max_events: int, max_bytes: int) -> _Checked | _Answer:
    """Validate one ingestion request in Amplitude's documented order.

    Returns the events to store, or the error answer. Pure: no server state is touched.
    """
    if not raw:
        return _Answer(400, {"code": 400, "error": "Missing request body"})
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return _Answer(400, {"code": 400, "error": "Invalid JSON request body"})
    if not isinstance(payload, dict):
        return _Answer(400, {"code": 400, "error": "Invalid JSON request body"})
    for required in ("api_key", "events"):
        if payload.get(required) is None:
            return _Answer(400, {"code": 400, "error": "Request missing required field", "missing_field": required})
    api_key = payload["api_key"]
    events = payload["events"]
    if not isinstance(api_key, str) or api_key not in api_keys:
        return _Answer(400, invalid_api_key_body(api_key))
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        return _Answer(400, {"code": 400, "error": "Invalid event JSON"})
    if len(events) > max_events or len(raw) > max_bytes:
        return _Answer(413, {"code": 413, "error": "Payload too large"}, n_events=len(events))

    min_id_length = _min_id_length(payload)
    missing: dict[str, list[int]] = collections.defaultdict(list)
    invalid: dict[str, list[int]] = collections.defaultdict(list)
    invalid_id_lengths: dict[str, list[int]] = collections.defaultdict(list)
    cleaned: list[dict[str, Any]] = []
    for index, original in enumerate(events):
        event = _truncate_strings(original)
        event_type = event.get("event_type")
        if event_type is None or event_type == "":
            missing["event_type"].append(index)
        elif not isinstance(event_type, str):
            invalid["event_type"].append(index)
        event_time = event.get("time")
        if event_time is not None and (not isinstance(event_time, int) or isinstance(event_time, bool)):
            invalid["time"].append(index)
        insert_id = event.get("insert_id")
        if insert_id is not None and not isinstance(insert_id, str):
            invalid["insert_id"].append(index)
        stripped = []
        for id_field in ("user_id", "device_id"):
            if event.get(id_field) is not None and not _is_valid_id(event[id_field], min_id_length):
                stripped.append(id_field)
                del event[id_field]
        if event.get("user_id") is None and event.get("device_id") is None:
            if stripped:
                for id_field in stripped:
                    invalid_id_lengths[id_field].append(index)
            else:
                # Amplitude documents device_id as required when there is no user_id.
                missing["device_id"].append(index)
        cleaned.append(event)

    if missing or invalid or invalid_id_lengths:
        body: dict[str, Any] = {"code": 400, "error": _INVALID_EVENTS_ERROR}
        for name, indexes in (
            ("events_with_missing_fields", missing),
            ("events_with_invalid_fields", invalid),
            ("events_with_invalid_id_lengths", invalid_id_lengths),
        ):
            if indexes:
                body[name] = dict(indexes)
        return _Answer(400, body, n_events=len(events))
    return _Checked(api_key=api_key, events=cleaned)


def _events_leniently(raw: bytes) -> list[dict[str, Any]]:
    """The request's events when they parse, else nothing (for fault answers that describe them)."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return []
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        return []
    return [event for event in events if isinstance(event, dict)]


def _api_key_leniently(raw: bytes) -> object:
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return payload.get("api_key") if isinstance(payload, dict) else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeAmplitude) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, reset) is an expected event here, not a server bug.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    timeout = 30  # seconds a silent client may hold a handler thread

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server.fake
        if self.path == "/_fake/state":
            self._send_json(200, fake.state())
        elif self.path == "/_fake/events":
            self._send_json(200, {"code": 200, "events": fake.stored_events()})
        else:
            self._send_json(404, {"code": 404, "error": "Invalid request path"})

    def do_POST(self) -> None:
        fake = self.server.fake
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self._send_json(400, {"code": 400, "error": "Missing request body"})
            return
        if length > fake.hard_max_bytes:
            # Too big to even read; the real server would not buffer it either.
            self.close_connection = True
            self._send_json(413, {"code": 413, "error": "Payload too large"})
            return
        raw = self.rfile.read(length) if length > 0 else b""
        if self.path == "/_fake/faults":
            status, body = fake.control_faults(raw)
            self._send_json(status, body)
            return
        if self.path not in INGEST_PATHS:
            self._send_json(400, {"code": 400, "error": "Invalid request path"})
            return
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):
                self._send_json(400, {"code": 400, "error": "Invalid JSON request body"})
                return
        fake.handle_ingest(self, self.path, raw)

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeAmplitude:
    """Fake Amplitude ingestion server on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        *,
        api_keys: set[str] | frozenset[str] = frozenset({"test-amplitude-key"}),
        eps_threshold: int = 30,
        eps_window_s: float = 1.0,
        seed: int = 0,
        max_events: int = 2000,
        max_bytes: int = 1_000_000,
        batch_max_bytes: int = 20_000_000,
        batch_eps_threshold: int = 1000,
        slow_s: float = 12.0,
    ) -> None:
        self.api_keys = frozenset(api_keys)
        self.eps_threshold = eps_threshold
        self.eps_window_s = eps_window_s
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.batch_max_bytes = batch_max_bytes
        self.batch_eps_threshold = batch_eps_threshold
        self.hard_max_bytes = 2 * max(max_bytes, batch_max_bytes)
        self.slow_s = slow_s
        self.url = ""

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._rng = random.Random(seed)
        self._queued_faults: collections.deque[str] = collections.deque()
        self._fault_rate = 0.0
        self._fault_kinds: list[str] = []
        self._seen: set[tuple[str, str, str]] = set()
        self._recent_by_id: dict[tuple[str, str], collections.deque[float]] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

        self.stored: list[dict[str, Any]] = []
        self.received_events = 0
        self.deduped = 0
        self.requests_log: list[dict[str, Any]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        if self._server is not None:
            raise RuntimeError("FakeAmplitude already started")
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", port), self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-amplitude",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Close the port (clients then see "connection refused") and abort pending slow answers."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._changed:
            self._changed.notify_all()

    def __enter__(self) -> FakeAmplitude:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------

    def fail_next(self, kind: str, count: int = 1) -> None:
        """The next `count` ingestion requests get fault `kind` (before any random fault)."""
        _check_fault_kinds([kind])
        if count < 0:
            raise ValueError(f"fault count must be >= 0, got {count}")
        with self._lock:
            self._queued_faults.extend([kind] * count)

    def set_fault_rate(self, rate: float, kinds: list[str]) -> None:
        """Each ingestion request gets a fault with probability `rate`, kind drawn from `kinds`."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {rate}")
        if rate > 0 and not kinds:
            raise ValueError("fault rate > 0 needs at least one fault kind")
        _check_fault_kinds(kinds)
        with self._lock:
            self._fault_rate = rate
            self._fault_kinds = list(kinds)

    def clear_faults(self) -> None:
        """Forget queued faults and the fault rate."""
        with self._lock:
            self._queued_faults.clear()
            self._fault_rate = 0.0
            self._fault_kinds = []

    def _next_fault(self) -> str | None:
        with self._lock:
            if self._queued_faults:
                return self._queued_faults.popleft()
            if self._fault_rate > 0 and self._rng.random() < self._fault_rate:
                return self._rng.choice(self._fault_kinds)
            return None

    # -- inspection ------------------------------------------------------------------------

    def stored_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.stored)

    def stored_insert_ids(self) -> list[str]:
        with self._lock:
            return [event["insert_id"] for event in self.stored if event.get("insert_id") is not None]

    def count_by_insert_id(self) -> dict[str, int]:
        with self._lock:
            return dict(
                collections.Counter(event["insert_id"] for event in self.stored if event.get("insert_id") is not None)
            )

    def wait_for_stored(self, n: int, timeout: float) -> bool:
        """True as soon as at least `n` events are stored; False after `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.stored) >= n, timeout=timeout)

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        """True once `n` ingestion requests are logged; each is logged just before its answer is sent."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.requests_log) >= n, timeout=timeout)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "code": 200,
                "stored": len(self.stored),
                "deduped": self.deduped,
                "received_events": self.received_events,
                "requests": len(self.requests_log),
                "recent": self.stored[-RECENT_EVENTS_IN_STATE:],  # a new list: safe to serialise
            }

    def control_faults(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        """POST /_fake/faults: {"kind", "count"} queues faults; {"rate", "kinds"} sets a rate."""
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("body must be a JSON object")
            if "kind" in request:
                self.fail_next(str(request["kind"]), int(request.get("count", 1)))
            elif "rate" in request:
                kinds = request.get("kinds") or []
                if not isinstance(kinds, list):
                    raise ValueError("kinds must be a list")
                self.set_fault_rate(float(request["rate"]), [str(kind) for kind in kinds])
            else:
                raise ValueError('expected {"kind", "count"} or {"rate", "kinds"}')
        except (ValueError, TypeError) as error:
            return 400, {"code": 400, "error": f"bad fault request: {error}"}
        return 200, {"code": 200, "ok": True}

    # -- ingestion -------------------------------------------------------------------------

    def handle_ingest(self, handler: _Handler, path: str, raw: bytes) -> None:
        fault = self._next_fault()
        if fault in INSTEAD_FAULTS:
            answer = self._fault_answer(fault, raw)
        else:
            answer = self._ingest(path, raw)
            if fault is not None:
                answer = self._spoil(fault, answer)
        if fault == "slow":
            aborted = self._stopping.wait(self.slow_s)
            if aborted:
                answer.status = None
        self._log(path, answer, fault)
        if answer.status is None:
            handler.close_connection = True  # the body was read in full, so the client sees EOF
        elif fault == "non_json_200":
            handler._send(200, b"<html><body>OK</body></html>", "text/html")
        else:
            handler._send_json(answer.status, answer.body)

    def _ingest(self, path: str, raw: bytes) -> _Answer:
        is_batch = path == BATCH_PATH
        checked = check_request(
            raw,
            api_keys=self.api_keys,
            max_events=self.max_events,
            max_bytes=self.batch_max_bytes if is_batch else self.max_bytes,
        )
        if isinstance(checked, _Answer):
            return checked
        # eps_threshold=0 switches throttling off on both endpoints.
        threshold = self.batch_eps_threshold if is_batch else self.eps_threshold
        if self.eps_threshold == 0:
            threshold = 0
        with self._changed:
            throttled = self._throttle(checked.events, threshold)
            if throttled is not None:
                return throttled
            stored = 0
            for event in checked.events:
                key = _dedupe_key(checked.api_key, event)
                if key is not None and key in self._seen:
                    self.deduped += 1
                    continue
                if key is not None:
                    self._seen.add(key)
                self.stored.append(event)
                stored += 1
            self.received_events += len(checked.events)
            self._changed.notify_all()
        return _Answer(
            200,
            {
                "code": 200,
                "events_ingested": len(checked.events),
                "payload_size_bytes": len(raw),
                "server_upload_time": int(time.time() * 1000),
            },
            stored=stored,
            n_events=len(checked.events),
        )

    def _throttle(self, events: list[dict[str, Any]], threshold: int) -> _Answer | None:
        """With the lock held: a 429 answer if any id would exceed the rate, else count the events."""
        if threshold <= 0:
            return None
        now = time.monotonic()
        limit = threshold * self.eps_window_s
        in_request: collections.Counter[tuple[str, str]] = collections.Counter()
        for event in events:
            in_request.update(_ids(event))
        totals: dict[tuple[str, str], int] = {}
        for identity, count in in_request.items():
            recent = self._recent_by_id.setdefault(identity, collections.deque())
            while recent and recent[0] <= now - self.eps_window_s:
                recent.popleft()
            totals[identity] = len(recent) + count
        over = {identity for identity, total in totals.items() if total > limit}
        if over:
            eps = {identity: round(totals[identity] / self.eps_window_s) for identity in over}
            return _Answer(
                429,
                {
                    "code": 429,
                    "error": _THROTTLED_ERROR,
                    "eps_threshold": threshold,
                    "throttled_users": {i[1]: n for i, n in eps.items() if i[0] == "user"},
                    "throttled_devices": {i[1]: n for i, n in eps.items() if i[0] == "device"},
                    "throttled_events": [
                        index for index, event in enumerate(events) if any(i in over for i in _ids(event))
                    ],
                },
                n_events=len(events),
            )
        for identity, count in in_request.items():
            self._recent_by_id[identity].extend([now] * count)
        return None

    def _fault_answer(self, fault: str, raw: bytes) -> _Answer:
        events = _events_leniently(raw)
        n = len(events)
        if fault == "503":
            return _Answer(503, {"code": 503, "error": _REASONS[503]}, n_events=n)
        if fault == "413":
            return _Answer(413, {"code": 413, "error": "Payload too large"}, n_events=n)
        if fault == "invalid_key":
            return _Answer(400, invalid_api_key_body(_api_key_leniently(raw)), n_events=n)
        if fault == "drop":
            return _Answer(None, n_events=n)
        body: dict[str, Any] = {"code": 429, "error": _THROTTLED_ERROR, "eps_threshold": self.eps_threshold}
        if fault == "429_throttled":
            ids = [identity for event in events for identity in _ids(event)]
            over = self.eps_threshold + 1
            body["throttled_users"] = {value: over for kind, value in ids if kind == "user"}
            body["throttled_devices"] = {value: over for kind, value in ids if kind == "device"}
            body["throttled_events"] = list(range(n))
        return _Answer(429, body, n_events=n)

    @staticmethod
    def _spoil(fault: str, answer: _Answer) -> _Answer:
        """Replace the answer of a processed request (whatever it stored stays stored)."""
        if fault in ("500", "502", "504"):
            status = int(fault)
            body = {"code": status, "error": _REASONS[status]}
            return _Answer(status, body, stored=answer.stored, n_events=answer.n_events)
        if fault == "store_then_drop":
            return _Answer(None, stored=answer.stored, n_events=answer.n_events)
        if fault == "non_json_200":
            return _Answer(200, stored=answer.stored, n_events=answer.n_events)
        return answer  # "slow": the genuine answer, late

    def _log(self, path: str, answer: _Answer, fault: str | None) -> None:
        with self._changed:
            self.requests_log.append(
                {
                    "path": path,
                    "status": answer.status,
                    "n_events": answer.n_events,
                    "n_stored": answer.stored,
                    "fault": fault,
                    "ts": time.time(),
                }
            )
            self._changed.notify_all()


def _check_fault_kinds(kinds: Iterable[str]) -> None:
    unknown = sorted(set(kinds) - FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; known: {sorted(FAULT_KINDS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake Amplitude HTTP V2 / Batch server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8082, help="port to listen on (0 = any free port)")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help="accepted API key (repeatable); default test-amplitude-key",
    )
    parser.add_argument("--eps-threshold", type=int, default=30, help="events/s per user/device; 0: off")
    parser.add_argument("--eps-window-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    # Block the stop signals before any thread starts, so only sigwait below receives them.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    fake = FakeAmplitude(
        api_keys=frozenset(args.api_keys or {"test-amplitude-key"}),
        eps_threshold=args.eps_threshold,
        eps_window_s=args.eps_window_s,
        seed=args.seed,
    )
    url = fake.start(port=args.port)
    print(f"fake amplitude serving {url} (POST {V2_PATH}, {BATCH_PATH}; GET /_fake/state)", flush=True)
    try:
        received = signal.sigwait(stop_signals)
    finally:
        fake.stop()
    print(f"fake amplitude stopped by {signal.Signals(received).name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
