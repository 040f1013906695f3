"""Long-lived pollers and emitters for the reliability scenarios, forked from one pre-imported parent.

Starting a Python process that imports the pipeline costs seconds on a small machine, and the kill
scenarios need dozens of processes. So a "zygote" process imports everything once and forks on
request. Each child is a real process with its own database connections and its own Amplitude SDK
client (both created after the fork); it loops the functions `reddit-dagster poll` and
`reddit-dagster emit` call until the stop file appears, its parent is gone, or it is SIGKILLed.
Only the timings differ from the CLI's: short retry backoffs and timeouts, so a fault costs
milliseconds instead of the production seconds.

Protocol on stdin/stdout, one line each way: `poll NAME` / `emit NAME` -> child pid;
`wait PID` -> its exit code (-9 after SIGKILL). Each child appends one JSON line per iteration to
OUT_DIR/NAME.jsonl.

Run: python -m tests.reliability.workers OUT_DIR STOP_FILE (environment: the pipeline's settings).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from reddit_dagster import db
from reddit_dagster.emit import emit_due
from reddit_dagster.ingest import poll_subreddit
from reddit_dagster.reddit import RedditClient
from reddit_dagster.settings import Settings

# emit_due options of the looping emitters (env overrides: WORKER_LEASE_S, WORKER_BATCH,
# WORKER_REQUEST_TIMEOUT_S). The lease is short so a killed emitter's rows come back quickly.
EMIT_OPTIONS: dict[str, Any] = {
    "retry_base_s": 0.05,
    "retry_max_s": 0.5,
    "throttle_s": 0.2,
    "request_timeout_s": 1.0,
    "send_timeout_s": 5.0,
    "lease_s": 2.0,
    "batch_size": 50,
}
POLL_INTERVAL_S = 0.1  # between the polls of one poller: a fast schedule
EMIT_INTERVAL_S = 0.05
MAX_LIFETIME_S = 600.0  # a child never outlives this, whatever happens to the test


def _emit_options() -> dict[str, Any]:
    options = dict(EMIT_OPTIONS)
    for key, env in (("lease_s", "WORKER_LEASE_S"), ("batch_size", "WORKER_BATCH"),
                     ("request_timeout_s", "WORKER_REQUEST_TIMEOUT_S")):
        if os.environ.get(env):
            options[key] = type(options[key])(os.environ[env])
    return options


def _should_stop(stop_file: Path, parent: int, deadline: float) -> bool:
    return stop_file.exists() or os.getppid() != parent or time.monotonic() > deadline


def poll_loop(name: str, out: Path, stop_file: Path, parent: int) -> None:
    settings = Settings()
    engine = db.create_engine(db.app_url(settings))
    secret = settings.reddit_client_secret.get_secret_value() if settings.reddit_client_secret else None
    client = RedditClient(
        api_url=settings.reddit_api_url, www_url=settings.reddit_www_url, user_agent=settings.reddit_user_agent,
        client_id=settings.reddit_client_id, client_secret=secret,
        timeout_s=5.0, max_attempts=3, backoff_base_s=0.05, max_wait_s=0.5,
    )
    deadline = time.monotonic() + MAX_LIFETIME_S
    with out.open("a") as log:
        while not _should_stop(stop_file, parent, deadline):
            for subreddit in settings.subreddits:
                result = poll_subreddit(engine, client, subreddit, overlap_margin=settings.overlap_margin)
                log.write(json.dumps({"role": "poll", "new": len(result.new_ids), "pages": result.pages,
                                      "gap": result.gap, "error": result.error}) + "\n")
                log.flush()
            time.sleep(POLL_INTERVAL_S)


def emit_loop(name: str, out: Path, stop_file: Path, parent: int) -> None:
    settings = Settings()
    engine = db.create_engine(db.app_url(settings))
    options = _emit_options()
    deadline = time.monotonic() + MAX_LIFETIME_S
    with out.open("a") as log:
        while not _should_stop(stop_file, parent, deadline):
            result = emit_due(engine, settings, owner=name, **options)
            log.write(json.dumps({"role": "emit", "sent": result.sent, "dead": result.dead,
                                  "retried": result.retried, "requests": result.batches,
                                  "error": result.error}) + "\n")
            log.flush()
            time.sleep(EMIT_INTERVAL_S)


def main(out_dir: str, stop_file: str) -> None:
    loops = {"poll": poll_loop, "emit": emit_loop}
    me = os.getpid()
    print("ready", flush=True)
    for line in sys.stdin:
        command, arg = line.split()
        if command in loops:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    loops[command](arg, Path(out_dir) / f"{arg}.jsonl", Path(stop_file), me)
                    code = 0
                except BaseException as exc:  # report it, then exit without running the parent's cleanup
                    print(f"{arg}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                finally:
                    os._exit(code)
            print(pid, flush=True)
        elif command == "wait":
            _, status = os.waitpid(int(arg), 0)
            print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
