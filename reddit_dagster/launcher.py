"""`make run` / `make demo`: start the local stack and stop all of it on Ctrl-C.

The stack is the embedded (or DATABASE_URL) PostgreSQL, `dagster dev` on :3000 and the Streamlit
dashboard on :8501; in demo mode also the Reddit and Amplitude simulators. Children get their own
session so a script can stop them with SIGINT (research/dagster.md §4), and they all receive an
explicit DATABASE_URL so only this process owns the embedded server, which stops when it exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy.engine import URL

from reddit_dagster import db
from reddit_dagster.settings import get_settings, project_root

DAGSTER_PORT = 3000
DASHBOARD_PORT = 8501
DEMO_REDDIT_PORT = 8081
DEMO_AMPLITUDE_PORT = 8082
DEMO_AMPLITUDE_KEY = "demo-amplitude-key"
STOP_TIMEOUT_S = 30.0


def stack_environment(app: URL, storage: URL) -> dict[str, str]:
    """What `dagster` commands and the dashboard need: the databases and a DAGSTER_HOME whose
    dagster.yaml is the project's (PostgreSQL storage, run queue)."""
    home = get_settings().data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    source = project_root() / "dagster.yaml"
    if source.exists():
        shutil.copyfile(source, home / "dagster.yaml")
    return {
        "DATABASE_URL": db.libpq_url(app),
        "DAGSTER_PG_URL": storage.render_as_string(hide_password=False),
        "DAGSTER_HOME": str(home),
    }


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, cwd=project_root(), start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    # A second Ctrl-C (or the SIGTERM that `timeout` and service managers send) must not abort the
    # shutdown half-way and orphan dagster's children or leave the database running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_stack(demo: bool = False) -> int:
    app, storage = db.prepare()
    env = dict(os.environ) | stack_environment(app, storage)
    procs: list[subprocess.Popen[bytes]] = []
    # Installed explicitly: a shell that starts us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if demo:
            python = sys.executable
            procs.append(
                _start(
                    [python, "-m", "reddit_dagster.simulators.fake_reddit", "--port", str(DEMO_REDDIT_PORT),
                     "--subreddits", ",".join(get_settings().subreddits), "--seed-posts", "40",
                     "--trickle-seconds", "15"],
                    env,
                )
            )
            procs.append(
                _start(
                    [python, "-m", "reddit_dagster.simulators.fake_amplitude", "--port",
                     str(DEMO_AMPLITUDE_PORT), "--api-key", DEMO_AMPLITUDE_KEY],
                    env,
                )
            )
            fake_reddit = f"http://127.0.0.1:{DEMO_REDDIT_PORT}"
            env |= {
                "REDDIT_API_URL": fake_reddit,
                "REDDIT_WWW_URL": fake_reddit,
                "AMPLITUDE_SERVER_URL": f"http://127.0.0.1:{DEMO_AMPLITUDE_PORT}/2/httpapi",
                "AMPLITUDE_API_KEY": DEMO_AMPLITUDE_KEY,
                "POLL_SCHEDULE_CRON": "* * * * *",
            }
            env.pop("REDDIT_CLIENT_ID", None)
            env.pop("REDDIT_CLIENT_SECRET", None)
        procs.append(
            _start([_bin("dagster"), "dev", "-h", "127.0.0.1", "-p", str(DAGSTER_PORT), "-w", "workspace.yaml"], env)
        )
        procs.append(
            _start(
                [_bin("streamlit"), "run", "streamlit_app.py", "--server.port", str(DASHBOARD_PORT),
                 "--server.address", "127.0.0.1", "--server.headless", "true",
                 "--browser.gatherUsageStats", "false"],
                env,
            )
        )
        print(
            f"\nreddit_dagster is starting{' (demo: simulated Reddit and Amplitude)' if demo else ''}:\n"
            f"  Dagster UI  http://127.0.0.1:{DAGSTER_PORT}\n"
            f"  Dashboard   http://127.0.0.1:{DASHBOARD_PORT}\n"
            f"  Database    {db.safe_url(app)}\n"
            "Press Ctrl-C to stop everything.\n",
            flush=True,
        )
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
        failed = [proc for proc in procs if proc.poll() not in (None, 0)]
        if failed:
            print(f"error: {' '.join(map(str, failed[0].args[:3]))} exited with {failed[0].returncode}",
                  file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        _stop(procs)
