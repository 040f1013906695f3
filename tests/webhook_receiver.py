"""A Slack-incoming-webhook stand-in on 127.0.0.1 for the alert tests: records every POST body.

It can answer with queued statuses (e.g. 503 twice), be stopped and started again on the same
port (a receiver that is down, then up), and hold a request until a second one is in progress,
to prove two senders ran at the same time.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/services/T0ALERTS/B0ALERTS/hook-path-7Qz9"  # the path of a Slack webhook URL is its secret


class WebhookReceiver:
    def __init__(self) -> None:
        self.port = 0
        self.bodies: list[dict[str, Any]] = []  # accepted messages, in order
        self.requests = 0  # every POST, failed ones included
        self.statuses: list[int] = []  # answers for the next requests (then 200)
        self.hold_first_until_second = False
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._second = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver._enter()
                try:
                    if status == 200:
                        with receiver._lock:
                            receiver.bodies.append(json.loads(body))
                    payload = b"ok" if status == 200 else b"no_service"
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    with receiver._lock:
                        receiver._in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def _enter(self) -> int:
        with self._lock:
            self.requests += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            first = self.requests == 1
            status = self.statuses.pop(0) if self.statuses else 200
        if self.hold_first_until_second:
            if first:
                self._second.wait(timeout=20)
            else:
                self._second.set()
        return status

    def stop(self) -> None:
        """Close the port (connections are refused) but keep the URL: start() reopens the same port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def texts(self) -> list[str]:
        with self._lock:
            return [body["text"] for body in self.bodies]

    def incident_ids(self) -> list[int]:
        """Incident ids in the delivered messages ("#12 key: ..."), with repeats."""
        return [int(n) for text in self.texts() for n in re.findall(r"^- #(\d+) ", text, re.MULTILINE)]

