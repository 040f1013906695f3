"""The dashboard in a real browser (issue 6): `streamlit run streamlit_app.py` against a seeded test
database, opened in Debian's headless chromium through Playwright. Hostile titles must show up as
text in the grid, no injected script may run, and the page keeps its layout."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy.engine import Engine

from tests.test_dashboard import HOSTILE_TITLES, SUBREDDITS, seed

pytestmark = [pytest.mark.timeout(90), pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"streamlit exited with {proc.returncode}"
        try:
            if requests.get(f"{base}/_stcore/health", timeout=1).text == "ok":
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"streamlit did not answer on {base} within {timeout} s")


@pytest.fixture
def dashboard(engine: Engine, child_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    seed(engine)
    port = free_port()
    env = child_env | {"SUBREDDITS": SUBREDDITS}
    env.pop("AMPLITUDE_API_KEY", None)
    log = (tmp_path / "streamlit.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_hostile_titles_render_as_text_and_no_script_runs(dashboard: str):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    outside: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            def only_local(route):  # the page must work offline; note anything it tries to fetch
                if route.request.url.startswith(dashboard):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            page.goto(dashboard)
            grid = page.locator("[data-testid='stDataFrame']").first
            # The grid draws on a canvas and mirrors the drawn cells into an accessibility table:
            # a title there was rendered as a cell, i.e. as text.
            cell = page.locator("[role='gridcell']")
            for title in HOSTILE_TITLES[:4]:
                cell.filter(has_text=title).first.wait_for(state="attached", timeout=30_000)
            grid.wait_for(state="visible")
            page.get_by_role("heading", name="Dead letters").wait_for(state="visible")
            page.wait_for_timeout(500)  # let the last frame paint before the screenshot
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"))

            assert page.evaluate("typeof window.__pwned") == "undefined"
            # No title became markup: there is no element the titles asked for.
            assert page.locator("img[src='x']").count() == 0
            assert page.locator("script", has_text="__pwned").count() == 0
            assert page.locator("strong", has_text="bold").count() == 0
            assert cell.filter(has_text="PWNED nul\ufffdbyte").count() == 1
            assert cell.filter(has_text="\u202eright-to-left").count() == 1
            assert cell.filter(has_text="PWNED long word word").count() == 1
            # Layout intact: the grid and every section fit the window, nothing scrolls sideways.
            box = grid.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 1400
            assert page.evaluate("document.documentElement.scrollWidth") <= 1400
            for heading in ("Front page", "Activity", "Recent failures and gaps", "Dead letters"):
                assert page.get_by_role("heading", name=heading).is_visible(), heading
            assert page.get_by_text("Amplitude is not configured").is_visible()
            assert not errors, errors
            assert not outside, f"the page tried to reach outside hosts: {outside}"
        finally:
            browser.close()
