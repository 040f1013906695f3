"""What the reliability scenarios share: the pipeline's environment, `reddit-dagster` processes,
the forked worker loops (workers.py), waiting on conditions, and the "restart sends nothing" check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "reddit-dagster")
SUB = "healthcare"
KEY = "reliability-amplitude-key"
UA = "linux:reddit-dagster-reliability:0.1 (by /u/nobody)"
V2 = "/2/httpapi"


def pipeline_env(child_env: dict[str, str], reddit: FakeReddit, amplitude: FakeAmplitude,
                 subreddits: str = SUB, key: str = KEY) -> dict[str, str]:
    """What a deployment sets, pointed at the fakes and the test database."""
    return child_env | {
        "SUBREDDITS": subreddits,
        "REDDIT_API_URL": reddit.url,
        "REDDIT_WWW_URL": reddit.url,
        "REDDIT_USER_AGENT": UA,
        "AMPLITUDE_SERVER_URL": amplitude.url + V2,
        "AMPLITUDE_API_KEY": key,
    }


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([CLI, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@dataclass
class Finished:
    command: str
    returncode: int
    stdout: str
    stderr: str


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> Finished:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} did not finish within {timeout} s; stderr: {err[-2000:]}") from None
    return Finished(" ".join(map(str, proc.args[1:])), proc.returncode, out, err)


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> Finished:
    return finish(start_cli(env, *args), timeout)


def run_all(env: dict[str, str], *commands: tuple[str, ...], timeout: float = 120) -> list[Finished]:
    """Start every command at once, then collect them in order."""
    procs = [start_cli(env, *command) for command in commands]
    return [finish(proc, timeout) for proc in procs]


def log_records(text: str) -> list[dict[str, Any]]:
    """The structured log records (one JSON object per line) in a process's output."""
    return [record for line in text.splitlines() if (record := _json_object(line)) is not None]


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def assert_clean_output(done: Finished) -> None:
    """Every line is one of ours: a result line, a one-line `error: ...`, or a one-line structured
    log record; no traceback anywhere, nothing from a library."""
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    for line in done.stderr.splitlines():
        ok = line.startswith("error: ") or _json_object(line) is not None
        assert ok, f"{done.command}: unexpected stderr line {line!r}"
    for line in done.stdout.splitlines():
        assert line.startswith(("r/", "emit")), f"{done.command}: unexpected stdout line {line!r}"


def error_lines(done: Finished) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def count(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def recorded(engine: Engine) -> int:
    return count(engine, "SELECT count(*) FROM posts")


def pending(engine: Engine) -> int:
    return count(engine, "SELECT count(*) FROM event_outbox WHERE status = 'pending'")


def live_ids(reddit: FakeReddit) -> set[str]:
    return {post_id for ids in reddit.state()["posts"].values() for post_id in ids}


def assert_restart_sends_nothing(env: dict[str, str], engine: Engine, reddit: FakeReddit,
                                 amplitude: FakeAmplitude) -> None:
    """Fresh `reddit-dagster poll` and `emit` over the same data: no new post, no Amplitude request,
    and the steady poll reads one page of /new per subreddit."""
    subreddits = env["SUBREDDITS"].split(",")
    posts_before, amplitude_requests = recorded(engine), len(amplitude.requests_log)
    new_before = reddit.count_requests("/new")
    poll, emit = run_all(env, ("poll",), ("emit",))
    for done in (poll, emit):
        assert done.returncode == 0, done.stderr
        assert_clean_output(done)
    assert [line.split(":")[0] for line in poll.stdout.splitlines()] == [f"r/{s} poll" for s in subreddits]
    assert all(line.split(": ", 1)[1].startswith("0 new,") for line in poll.stdout.splitlines()), poll.stdout
    assert emit.stdout.startswith("emit: 0 sent, 0 dead, 0 left pending for retry (0 claimed, 0 requests)"), emit.stdout
    assert recorded(engine) == posts_before
    assert len(amplitude.requests_log) == amplitude_requests
    assert reddit.count_requests("/new") - new_before == len(subreddits)


class Workers:
    """Forked pollers and emitters (see workers.py). Every child started is stopped or killed by
    `close`; `kill` SIGKILLs one and returns its exit code."""

    def __init__(self, env: dict[str, str], out_dir: Path) -> None:
        self.out_dir = out_dir
        self.stop_file = out_dir / "stop"
        self.running: dict[int, str] = {}  # pid -> name
        self.exit_codes: dict[str, int] = {}
        self._serial = 0
        self.log_file = out_dir / "workers.log"  # the children's log records and errors
        with self.log_file.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.workers", str(out_dir), str(self.stop_file)],
                env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            )
        assert self._read() == "ready"

    def _read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def _ask(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read()

    def start(self, role: str) -> int:
        self._serial += 1
        name = f"{role}-{self._serial}"
        pid = int(self._ask(f"{role} {name}"))
        self.running[pid] = name
        return pid

    def role_of(self, pid: int) -> str:
        return self.running[pid].split("-")[0]

    def pids(self, role: str) -> list[int]:
        return [pid for pid, name in self.running.items() if name.startswith(role + "-")]

    def _reap(self, pid: int) -> int:
        code = int(self._ask(f"wait {pid}"))
        self.exit_codes[self.running.pop(pid)] = code
        return code

    def kill(self, pid: int) -> int:
        os.kill(pid, signal.SIGKILL)
        return self._reap(pid)

    def stop_all(self, timeout: float = 30) -> dict[str, int]:
        """Ask every child to finish its iteration and exit; SIGKILL any that does not in time."""
        self.stop_file.touch()
        deadline = time.monotonic() + timeout
        codes = {}
        for pid in list(self.running):
            name = self.running[pid]
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            codes[name] = self.kill(pid) if _alive(pid) else self._reap(pid)
        self.stop_file.unlink(missing_ok=True)
        return codes

    def records(self, role: str | None = None) -> list[dict[str, Any]]:
        lines = []
        for path in sorted(self.out_dir.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by SIGKILL
        return [line for line in lines if role is None or line["role"] == role]

    def close(self) -> None:
        try:
            if self.running:
                self.stop_all(timeout=10)
        finally:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def _alive(pid: int) -> bool:
    """True until the process has ended (it is a zombie until the zygote reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
