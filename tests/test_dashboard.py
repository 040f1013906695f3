"""The dashboard (issue 6) in Streamlit's AppTest against the real test database: its clear states
(empty, unreachable, Amplitude not configured) and hostile titles shown as plain text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import streamlit as st
from sqlalchemy.engine import Engine
from streamlit.testing.v1 import AppTest

from reddit_dagster import health
from reddit_dagster.schema import event_outbox
from reddit_dagster.settings import get_settings
from reddit_dagster.store import PollRecord, open_incident, record_new_posts, save_front_page, write_poll_log
from tests.test_record import make_post

pytestmark = pytest.mark.timeout(90)

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
SUBREDDITS = "healthcare,AskDocs"
# Each hostile title carries PWNED so the test can find it wherever it went.
LONG_TITLE = "PWNED long " + "word " * 20_000 + "END"  # ~100 KB
HOSTILE_TITLES = [
    '<script>window.__pwned=1</script> PWNED script',
    '<img src=x onerror="window.__pwned=1"> PWNED img',
    "PWNED entities &amp; &lt;b&gt;bold&lt;/b&gt; &#x27;quoted&#x27; &nbsp;",
    "PWNED **bold** _italic_ [link](javascript:alert(1)) `code` :red[colour] $x^2$ # heading",
    "PWNED nul\x00byte",
    "PWNED \u202eright-to-left override\u202c and \u200f mark \u05e9\u05dc\u05d5\u05dd",
    LONG_TITLE,
]
# Front page ranks in three snapshots: post 1 climbs, post 2 falls, post 3 is new.
SNAPSHOTS = [[2, 1, 4], [2, 1, 4], [1, 2, 3]]


def seed(engine: Engine, hostile: bool = True) -> dict[str, str]:
    """A small pipeline history: posts (some hostile), sent/pending/dead events, three front-page
    snapshots, polls (one with a gap, one failed) and incidents. Returns title by post id."""
    titles = {n: f"ordinary post {n}" for n in range(1, 6)}
    if hostile:
        titles |= {10 + i: title for i, title in enumerate(HOSTILE_TITLES)}
    made = {n: make_post(n, title=title, score=100 * n, num_comments=n, link_flair_text="News",
                         permalink=f"/r/healthcare/comments/{n:x}/post_{n}/")
            for n, title in titles.items()}
    made[3] = make_post(3, title=titles[3], stickied=True, permalink="https://evil.example/@x")
    record_new_posts(engine, made.values())
    with engine.begin() as conn:
        conn.execute(sa.update(event_outbox).where(event_outbox.c.post_id == made[1].id)
                     .values(status="sent", sent_at=sa.func.now()))
        conn.execute(sa.update(event_outbox).where(event_outbox.c.post_id == made[2].id)
                     .values(status="dead", attempts=3, last_error="HTTP 400: invalid event PWNED <b>x</b>"))
    others = [n for n in titles if n > 4]  # below the three that move, in every snapshot
    start = datetime.now(UTC) - timedelta(minutes=30)
    for i, order in enumerate(SNAPSHOTS):
        listing = [made[n] for n in order + others]
        save_front_page(engine, "healthcare", listing, start + timedelta(minutes=10 * i))
    write_poll_log(engine, PollRecord("healthcare", start, gap=True, new_posts=7))
    write_poll_log(engine, PollRecord("AskDocs", start, error="ReadTimeout: reddit did not answer"))
    write_poll_log(engine, PollRecord("healthcare", datetime.now(UTC), new_posts=2, reached_known=True))
    open_incident(engine, "gap", "healthcare", "walk did not reach known posts")
    open_incident(engine, "dead_letter", made[2].id, "Amplitude rejected the event: invalid PWNED")
    return {made[n].id: made[n].title for n in titles}


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, libpq_database_url: str) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", libpq_database_url)
    monkeypatch.setenv("SUBREDDITS", SUBREDDITS)
    monkeypatch.delenv("AMPLITUDE_API_KEY", raising=False)
    _reset()
    yield
    _reset()


def _reset() -> None:
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()


def run_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def plain(markdown: str) -> str:
    """The text a reader sees for markdown whose special characters were backslash-escaped."""
    return re.sub(r"\\(.)", r"\1", markdown)


def texts_outside_tables(at: AppTest) -> list[str]:
    """Everything the page renders through markdown-capable elements (everything but dataframes)."""
    return [str(node.proto) for node in at.main if node.type != "dataframe"]


def test_empty_database_says_no_poll_yet_and_what_to_do(engine: Engine, app_env: None):
    at = run_app()
    info = " ".join(i.value for i in at.info)
    assert "No poll yet" in info and "make run" in info
    assert [m.value for m in at.metric if m.label == "Posts total"] == ["0"]
    assert [m.value for m in at.metric if m.label == "Last poll"] == ["never"]
    captions = " ".join(c.value for c in at.caption)
    assert "No front-page snapshot yet" in captions
    assert not at.error


def test_database_unreachable_is_one_line_error_not_traceback(engine: Engine, app_env: None,
                                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres:hunter2@127.0.0.1:1/nowhere")
    get_settings.cache_clear()
    at = run_app()
    assert len(at.error) == 1
    message = plain(at.error[0].value)
    assert "Database unreachable" in message and "127.0.0.1:1/nowhere" in message and "Connection refused" in message
    assert "hunter2" not in message and "Traceback" not in message and "\n" not in message
    assert not at.metric and not at.dataframe


def test_missing_tables_explain_how_to_create_them(app_env: None, monkeypatch: pytest.MonkeyPatch,
                                                   libpq_database_url: str):
    # The server's maintenance database exists but has none of our tables.
    monkeypatch.setenv("DATABASE_URL", libpq_database_url.rsplit("/", 1)[0] + "/postgres")
    get_settings.cache_clear()
    at = run_app()
    assert len(at.error) == 1 and "make db" in at.error[0].value


def test_amplitude_not_configured_shows_pending_and_how_to_fix(engine: Engine, app_env: None,
                                                               monkeypatch: pytest.MonkeyPatch):
    seed(engine, hostile=False)
    at = run_app()
    warning = " ".join(w.value for w in at.warning)
    assert "Amplitude is not configured" in warning and "AMPLITUDE_API_KEY" in warning
    assert "3 events are pending" in warning
    assert [m.value for m in at.metric if m.label == "Events pending"] == ["3"]

    monkeypatch.setenv("AMPLITUDE_API_KEY", "configured-key")
    _reset()
    at = run_app()
    assert not any("Amplitude" in w.value for w in at.warning)
    assert "configured-key" not in " ".join(texts_outside_tables(at))


def test_health_sections_show_polls_failures_dead_letters_and_rank_movement(engine: Engine, app_env: None):
    titles = seed(engine, hostile=False)
    at = run_app()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Posts total"] == "5" and metrics["Posts today"] == "5"
    assert metrics["Events sent"] == "1" and metrics["Dead letters"] == "1" and metrics["Events pending"] == "3"
    assert [m.proto.delta for m in at.metric if m.label == "Last poll"] == ["ok"]
    assert any("Gap alert" in e.value and "r/healthcare" in e.value for e in at.error)

    front, polls, failures, dead = (df.value for df in at.dataframe)
    assert list(front["rank"]) == [1, 2, 3, 4]
    assert list(front["title"][:3]) == [titles["p000001"], titles["p000002"], titles["p000003"]]
    assert list(front["movement"]) == ["▲ 1", "▼ 1", "new", "="]
    assert front["url"][0] == "https://www.reddit.com/r/healthcare/comments/1/post_1/"
    assert front["url"][2] == "https://www.reddit.com/comments/p000003/"  # hostile permalink replaced
    assert bool(front["stickied"][2]) and front["flair"][0] == "News" and front["score"][1] == 200
    assert dict(zip(polls["subreddit"], polls["outcome"], strict=True)) == {"healthcare": "ok", "AskDocs": "failed"}
    assert "ReadTimeout: reddit did not answer" in set(failures["cause"])
    assert "walk did not reach known posts" in set(failures["cause"])
    assert list(dead["last_error"]) == ["HTTP 400: invalid event PWNED <b>x</b>"]
    assert at.segmented_control[0].value == "hour"
    at.segmented_control[0].set_value("day").run()
    assert not at.exception and at.segmented_control[0].value == "day"


def test_hostile_titles_render_as_plain_text_and_layout_stays_intact(engine: Engine, app_env: None):
    titles = seed(engine)
    at = run_app()
    front = at.dataframe[0].value
    shown = set(front["title"])
    for post_id, title in titles.items():
        if "PWNED" not in title:
            continue
        if len(title) > health.TITLE_CHARS:
            assert title[: health.TITLE_CHARS] + "…" in shown
        else:
            assert title.replace("\x00", "\ufffd") in shown, post_id
    assert "PWNED nul\ufffdbyte" in shown
    # Nothing of a title reached an element that renders markdown or HTML.
    assert not [text for text in texts_outside_tables(at) if "PWNED" in text]
    assert not at.get("html")
    # The sections after the front page are all there: the long titles did not swallow the page.
    assert [s.value for s in at.subheader][-4:] == [
        "Activity", "Last poll per subreddit", "Recent failures and gaps", "Dead letters"]
    assert len(at.dataframe) == 4 and len(at.metric) == 7


def test_markdown_escaping_neutralises_every_special_character():
    hostile = "r/a_b *x* [l](u) `c` :red[x] $y$ <b> # h | t ~s~ \\ line\nbreak"
    escaped = health.escape_markdown(hostile)
    assert plain(escaped) == hostile.replace("\n", " ")
    special = set("_*[]()`:$<>#|~\\")
    position = 0
    while position < len(escaped):  # every special character is preceded by its escaping backslash
        if escaped[position] == "\\":
            assert escaped[position + 1] in special
            position += 2
        else:
            assert escaped[position] not in special, escaped[position:]
            position += 1


def test_alert_state_says_how_the_webhook_alert_went():
    from datetime import UTC, datetime

    from reddit_dagster.health import alert_state

    assert alert_state(datetime.now(UTC), None) == "sent"
    assert alert_state(None, "receiver at 127.0.0.1 refused the connection") == (
        "failed: receiver at 127.0.0.1 refused the connection"
    )
    assert alert_state(None, None) == "not sent"
