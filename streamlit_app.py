"""The dashboard (DESIGN §7): page layout only; the queries live in reddit_dagster.health.

Reddit text (titles, authors, flair) and error messages are shown only through st.dataframe, which
draws cells as plain text. Elements that render markdown (titles, captions, alerts, metrics) carry
only our own words and numbers; configured names and database errors in them are escaped.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from reddit_dagster import db, health
from reddit_dagster.settings import get_settings

REFRESH_SECONDS = 30
CACHE_SECONDS = 10
esc = health.escape_markdown

st.set_page_config(page_title="reddit_dagster", layout="wide")


@st.cache_resource(show_spinner=False)
def engine_for(url: str) -> Engine:
    return health.dashboard_engine(url)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def load(url: str, subreddits: tuple[str, ...], unit: str) -> health.Dashboard:
    return health.read_dashboard(engine_for(url), subreddits, unit)


def when(moment: object) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else "–"


def table(rows: list[dict], columns: dict[str, object], height: int | str = "auto") -> None:
    frame = pd.DataFrame(rows, columns=list(columns))
    st.dataframe(frame, column_config=columns, hide_index=True, height=height, width="stretch")


def show_alerts(data: health.Dashboard, amplitude_configured: bool) -> None:
    h = data.health
    if h.no_poll_yet:
        st.info(
            "**No poll yet.** The database is ready but empty. Start the pipeline with `make run` "
            "(or `make demo` to try it with simulated Reddit and Amplitude); the first poll records "
            "the newest posts and a front-page snapshot, and this page fills in by itself.",
            icon=":material/hourglass_empty:",
        )
    if not amplitude_configured:
        st.warning(
            f"**Amplitude is not configured**: {h.pending:,} events are pending and nothing is sent. "
            "Set `AMPLITUDE_API_KEY` (the project's API key) in the pipeline's environment and restart "
            "`make run`; the pending events are then sent, each exactly once. Nothing is lost meanwhile.",
            icon=":material/key_off:",
        )
    gaps = h.gap_alerts
    if gaps:
        names = ", ".join(sorted({esc(f"r/{gap['subreddit']}") for gap in gaps}))
        st.error(
            f"**Gap alert** ({names}): a walk did not reach already recorded posts, so posts may have been "
            "missed. A deeper reconcile walk recovers them; see Recent failures and gaps below.",
            icon=":material/report:",
        )


def show_metrics(h: health.Health) -> None:
    polled = [poll for poll in h.last_polls if poll["started_at"] is not None]
    last = max(polled, key=lambda poll: poll["started_at"]) if polled else None
    outcome_color = {"ok": "green", "running": "blue", "gap": "orange", "failed": "red"}
    cols = st.columns(7)
    if last is None:
        cols[0].metric("Last poll", "never", border=True)
    else:
        cols[0].metric(
            "Last poll", f"{health.format_age((h.now - last['started_at']).total_seconds())} ago",
            delta=last["outcome"], delta_color=outcome_color[last["outcome"]], delta_arrow="off", border=True,
        )
    counts = {"Posts today": h.posts_today, "Posts total": h.posts_total, "Events pending": h.pending,
              "Events sent": h.sent}
    for col, (label, count) in zip(cols[1:5], counts.items(), strict=True):
        col.metric(label, health.format_count(count), border=True, help=f"{count:,} exactly")
    cols[5].metric("Dead letters", health.format_count(h.dead), border=True, help=f"{h.dead:,} exactly",
                   delta="needs attention" if h.dead else None, delta_color="red", delta_arrow="off")
    cols[6].metric("Oldest pending", health.format_age(h.oldest_pending_age_s), border=True,
                   help="Age of the oldest event not yet accepted by Amplitude")


def show_front_page(page: health.FrontPage, now: datetime) -> None:
    st.subheader(esc(f"r/{page.subreddit}"), anchor=False)
    if page.snapshot_at is None:
        st.caption("No front-page snapshot yet: the next poll takes one.")
        return
    st.caption(
        f"Hot listing as of {when(page.snapshot_at)} ({health.format_age((now - page.snapshot_at).total_seconds())} "
        f"ago) · {len(page.rows)} posts · "
        f"movement compares the last {page.snapshots_compared} snapshots (▲ moved up)"
    )
    depth = max(len(page.rows), 1) + 1
    rows = [dict(row, trend=[depth - (rank or depth) for rank in row["rank_history"]]) for row in page.rows]
    table(
        rows,
        {
            "rank": st.column_config.NumberColumn("#", width=40, pinned=True),
            "movement": st.column_config.TextColumn("Δ", width=55),
            "trend": st.column_config.LineChartColumn("Rank trend", width=90, y_min=0, y_max=depth),
            "title": st.column_config.TextColumn("Title", width="large"),
            "url": st.column_config.LinkColumn("Post", display_text=":material/open_in_new:", width=50),
            "author": st.column_config.TextColumn("Author", width="small"),
            "flair": st.column_config.TextColumn("Flair", width="small"),
            "score": st.column_config.NumberColumn("Score", width=65),
            "comments": st.column_config.NumberColumn("Comments", width=80),
            "age": st.column_config.TextColumn("Age", width=50),
            "stickied": st.column_config.CheckboxColumn("Pinned", width=60),
            "nsfw": st.column_config.CheckboxColumn("NSFW", width=55),
        },
        height=min(38 + 35 * len(rows), 560),
    )


def show_activity(data: health.Dashboard) -> None:
    st.subheader("Activity", anchor=False)
    st.segmented_control(
        "Per", ["hour", "day"], default="hour", key="unit", label_visibility="collapsed", required=True,
        format_func=lambda u: "Last 48 hours" if u == "hour" else "Last 30 days",
    )
    frame = pd.DataFrame(data.activity).set_index("bucket")
    st.line_chart(frame, height=260, y_label="per " + data.activity_unit, x_label="", color=["#4C78A8", "#F58518"])


def show_polls(h: health.Health) -> None:
    st.subheader("Last poll per subreddit", anchor=False)
    table(h.last_polls, {
        "subreddit": st.column_config.TextColumn("Subreddit"),
        "outcome": st.column_config.TextColumn("Outcome", width=70),
        "started_at": st.column_config.DatetimeColumn("Started (UTC)", format="MM-DD HH:mm", width=95),
        "new_posts": st.column_config.NumberColumn("New", width=45),
        "error": st.column_config.TextColumn("Error", width="medium"),
        "kind": st.column_config.TextColumn("Kind", width=60),
    })


def show_failures(h: health.Health) -> None:
    st.subheader("Recent failures and gaps", anchor=False)
    if not h.incidents and not h.problem_polls:
        st.caption("None. Failed runs, gaps, dead letters and other alerts show up here with their cause.")
        return
    rows = [
        {"at": row["opened_at"], "what": row["kind"], "where": row["key"], "cause": row["message"],
         "state": "open" if row["resolved_at"] is None else "resolved",
         "alert": health.alert_state(row["notified_at"], row["notify_error"])}
        for row in h.incidents
    ] + [
        {"at": row["started_at"], "what": f"{row['kind']} {'gap' if row['gap'] else 'failed'}",
         "where": row["subreddit"], "cause": row["error"] or "walk did not reach known posts", "state": "poll",
         "alert": ""}
        for row in h.problem_polls
    ]
    table(rows, {
        "at": st.column_config.DatetimeColumn("When (UTC)", format="MM-DD HH:mm", width=95),
        "what": st.column_config.TextColumn("What", width=90),
        "where": st.column_config.TextColumn("Where", width=90),
        "cause": st.column_config.TextColumn("Cause", width="large"),
        "state": st.column_config.TextColumn("State", width=70),
        "alert": st.column_config.TextColumn("Alert", width=90, help="webhook delivery (ALERT_WEBHOOK_URL)"),
    }, height=min(38 + 35 * len(rows), 400))


def show_dead_letters(h: health.Health) -> None:
    st.subheader("Dead letters", anchor=False)
    if not h.dead_letters:
        st.caption("None: every event so far was accepted by Amplitude or is still being retried.")
        return
    table(h.dead_letters, {
        "created_at": st.column_config.DatetimeColumn("Recorded (UTC)", format="MM-DD HH:mm", width=95),
        "post_id": st.column_config.TextColumn("Post", width=70),
        "last_error": st.column_config.TextColumn("Reason", width="medium"),
        "attempts": st.column_config.NumberColumn("Tries", width=45),
        "title": st.column_config.TextColumn("Title", width="medium"),
        "subreddit": st.column_config.TextColumn("Subreddit", width="small"),
        "insert_id": None,
    }, height=min(38 + 35 * len(h.dead_letters), 400))


@st.fragment(run_every=REFRESH_SECONDS)
def dashboard() -> None:
    try:
        settings = get_settings()
        url = db.app_url(settings)
        data = load(db.libpq_url(url), tuple(settings.subreddits), st.session_state.get("unit", "hour"))
    except Exception as exc:  # any failure becomes one line on the page, never a traceback
        st.error(
            f"**Database unreachable**: {esc(db.first_line(exc))}. Check `DATABASE_URL` and that "
            f"PostgreSQL is running; this page retries every {REFRESH_SECONDS} s.",
            icon=":material/database_off:",
        )
        return
    st.caption(
        f"Read from {esc(db.safe_url(url))} at {data.health.now:%H:%M:%S} UTC · refreshes every "
        f"{REFRESH_SECONDS} s · never calls Reddit"
    )
    show_alerts(data, settings.amplitude_api_key is not None)
    show_metrics(data.health)
    st.header("Front page", anchor=False, divider="gray")
    for page in data.front_pages:
        show_front_page(page, data.health.now)
    st.header("Pipeline", anchor=False, divider="gray")
    left, right = st.columns([3, 2], gap="large")
    with left:
        show_activity(data)
    with right:
        show_polls(data.health)
    left, right = st.columns(2, gap="large")
    with left:
        show_failures(data.health)
    with right:
        show_dead_letters(data.health)


st.title("reddit_dagster", anchor=False)
dashboard()
