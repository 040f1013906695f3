"""Read-only queries behind the dashboard (DESIGN §7): the front page and the pipeline's health.

Every query is bounded by an index (a range on a timestamp index, a probe on a status index, or
an ORDER BY ... LIMIT along an index), so the page stays fast with millions of posts; the counts
are index-only scans. One read-only REPEATABLE READ transaction reads everything, so the numbers
on a page agree with each other. Reddit text comes back as data: showing it as plain text is the
page's job (streamlit_app.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from reddit_dagster import db
from reddit_dagster.schema import event_outbox, front_page, incidents, poll_log, posts

REDDIT_URL = "https://www.reddit.com"
TITLE_CHARS = 300  # longer titles are cut for display; the stored title is untouched
RANK_HISTORY = 6  # snapshots compared for rank movement
LIST_LIMIT = 50
ACTIVITY_PERIODS = {"hour": 48, "day": 30}
GAP_ALERT_WINDOW = timedelta(hours=24)
# A permalink is a path on reddit.com; anything else (a scheme, "@host", spaces) is not used in a link.
_PERMALINK = re.compile(r"^/[A-Za-z0-9_\-./%~]*$")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$&=\"'])")


class DashboardUnavailable(RuntimeError):
    """The database cannot be read; the message is one line, safe to show (no password)."""


@dataclass(frozen=True)
class FrontPage:
    subreddit: str
    snapshot_at: datetime | None
    snapshots_compared: int
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Health:
    now: datetime
    posts_total: int
    posts_today: int
    pending: int
    sent: int
    dead: int
    oldest_pending_at: datetime | None
    last_polls: list[dict[str, Any]]  # one per configured subreddit; started_at None if never polled
    problem_polls: list[dict[str, Any]]  # gaps and failed polls, newest first
    incidents: list[dict[str, Any]]  # open ones first, then the newest
    dead_letters: list[dict[str, Any]]

    @property
    def no_poll_yet(self) -> bool:
        return self.posts_total == 0 and all(poll["started_at"] is None for poll in self.last_polls)

    @property
    def oldest_pending_age_s(self) -> float | None:
        return (self.now - self.oldest_pending_at).total_seconds() if self.oldest_pending_at else None

    @property
    def gap_alerts(self) -> list[dict[str, Any]]:
        """Open gap incidents and gap polls of the last 24 hours."""
        recent = self.now - GAP_ALERT_WINDOW
        alerts = [
            {"at": row["opened_at"], "subreddit": row["key"], "message": row["message"]}
            for row in self.incidents
            if row["kind"] == "gap" and row["resolved_at"] is None
        ]
        alerts += [
            {"at": row["started_at"], "subreddit": row["subreddit"], "message": "walk did not reach known posts"}
            for row in self.problem_polls
            if row["gap"] and row["started_at"] >= recent
        ]
        return alerts


@dataclass(frozen=True)
class Dashboard:
    health: Health
    front_pages: list[FrontPage]
    activity: list[dict[str, Any]]  # bucket, posts recorded, events sent
    activity_unit: str


def dashboard_engine(url: str) -> Engine:
    """An engine that can only read, gives up connecting after 5 s and any statement after 10 s."""
    return db.create_engine(
        db.normalise_url(url),
        pool_size=2,
        connect_args={
            "connect_timeout": 5,
            "options": "-c default_transaction_read_only=on -c statement_timeout=10000",
        },
    )


def read_dashboard(engine: Engine, subreddits: Sequence[str], unit: str = "hour") -> Dashboard:
    if unit not in ACTIVITY_PERIODS:
        raise ValueError(f"unit must be one of {sorted(ACTIVITY_PERIODS)}, got {unit!r}")
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
            return Dashboard(
                health=read_health(conn, subreddits),
                front_pages=[read_front_page(conn, name) for name in subreddits],
                activity=read_activity(conn, unit),
                activity_unit=unit,
            )
    except sa.exc.ProgrammingError as exc:
        if getattr(exc.orig, "pgcode", None) == "42P01":  # undefined_table
            raise DashboardUnavailable(
                f"the database {engine.url.database!r} has no pipeline tables yet: "
                "run `make db` (or `reddit-dagster db upgrade`)"
            ) from None
        raise DashboardUnavailable(f"query failed: {_first_line(exc.orig)}") from None
    except sa.exc.DBAPIError as exc:
        raise DashboardUnavailable(f"cannot read {db.safe_url(engine.url)}: {_first_line(exc.orig)}") from None


def read_health(conn: Connection, subreddits: Sequence[str]) -> Health:
    now = conn.execute(sa.select(sa.func.now())).scalar_one()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    posts_total = conn.execute(sa.select(sa.func.count()).select_from(posts)).scalar_one()
    posts_today = conn.execute(
        sa.select(sa.func.count()).select_from(posts).where(posts.c.first_seen_at >= today)
    ).scalar_one()
    by_status = dict(
        conn.execute(sa.select(event_outbox.c.status, sa.func.count()).group_by(event_outbox.c.status)).all()
    )
    oldest_pending = conn.execute(
        sa.select(sa.func.min(event_outbox.c.created_at)).where(event_outbox.c.status == "pending")
    ).scalar_one()
    return Health(
        now=now,
        posts_total=posts_total,
        posts_today=posts_today,
        pending=by_status.get("pending", 0),
        sent=by_status.get("sent", 0),
        dead=by_status.get("dead", 0),
        oldest_pending_at=oldest_pending,
        last_polls=[_last_poll(conn, name) for name in subreddits],
        problem_polls=_problem_polls(conn),
        incidents=_incidents(conn),
        dead_letters=_dead_letters(conn),
    )


def _last_poll(conn: Connection, subreddit: str) -> dict[str, Any]:
    row = conn.execute(
        sa.select(poll_log)
        .where(poll_log.c.subreddit == subreddit)
        .order_by(poll_log.c.started_at.desc())
        .limit(1)
    ).mappings().first()
    if row is None:
        return {"subreddit": subreddit, "started_at": None, "kind": None, "outcome": "no poll yet",
                "new_posts": None, "error": None}
    return {
        "subreddit": subreddit,
        "started_at": row["started_at"],
        "kind": row["kind"],
        "outcome": poll_outcome(row["error"], row["gap"], row["finished_at"]),
        "new_posts": row["new_posts"],
        "error": row["error"],
    }


def poll_outcome(error: str | None, gap: bool, finished_at: datetime | None) -> str:
    if error is not None:
        return "failed"
    if gap:
        return "gap"
    return "ok" if finished_at is not None else "running"


def _problem_polls(conn: Connection) -> list[dict[str, Any]]:
    # The WHERE clause is the predicate of poll_log_problems_idx (migration 0003), word for word.
    rows = conn.execute(
        sa.select(poll_log.c.started_at, poll_log.c.subreddit, poll_log.c.kind, poll_log.c.gap, poll_log.c.error)
        .where(sa.text("gap OR error IS NOT NULL"))
        .order_by(poll_log.c.started_at.desc())
        .limit(LIST_LIMIT)
    ).mappings()
    return [dict(row) for row in rows]


def _incidents(conn: Connection) -> list[dict[str, Any]]:
    columns = (incidents.c.id, incidents.c.kind, incidents.c.key, incidents.c.message,
               incidents.c.opened_at, incidents.c.last_seen_at, incidents.c.resolved_at,
               incidents.c.notified_at, incidents.c.notify_error)
    open_rows = conn.execute(
        sa.select(*columns).where(incidents.c.resolved_at.is_(None))
        .order_by(incidents.c.opened_at.desc()).limit(LIST_LIMIT)
    ).mappings().all()
    newest = conn.execute(
        sa.select(*columns).order_by(incidents.c.opened_at.desc()).limit(LIST_LIMIT)
    ).mappings().all()
    seen = {row["id"] for row in open_rows}
    return [dict(row) for row in open_rows] + [dict(row) for row in newest if row["id"] not in seen]


def alert_state(notified_at: datetime | None, notify_error: str | None) -> str:
    """How an incident's webhook alert went: sent, failed (retried), or not sent (no webhook)."""
    if notified_at is not None:
        return "sent"
    return f"failed: {notify_error}" if notify_error else "not sent"


def _dead_letters(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(
            event_outbox.c.created_at,
            event_outbox.c.post_id,
            posts.c.subreddit,
            sa.func.left(posts.c.title, TITLE_CHARS + 1).label("title"),
            event_outbox.c.attempts,
            event_outbox.c.last_error,
            event_outbox.c.insert_id,
        )
        .join(posts, posts.c.id == event_outbox.c.post_id)
        .where(event_outbox.c.status == "dead")
        .order_by(event_outbox.c.created_at.desc())
        .limit(LIST_LIMIT)
    ).mappings()
    return [dict(row, title=display_title(row["title"])) for row in rows]


def read_front_page(conn: Connection, subreddit: str) -> FrontPage:
    """The latest snapshot of the subreddit's hot listing, with each post's rank in the snapshots before."""
    snapshots = list(
        conn.scalars(
            sa.select(front_page.c.snapshot_at)
            .where(front_page.c.subreddit == subreddit)
            .distinct()
            .order_by(front_page.c.snapshot_at.desc())
            .limit(RANK_HISTORY)
        )
    )
    if not snapshots:
        return FrontPage(subreddit=subreddit, snapshot_at=None, snapshots_compared=0)
    latest, oldest = snapshots[0], snapshots[-1]
    rows = conn.execute(
        sa.select(
            front_page.c.snapshot_at, front_page.c.rank, front_page.c.post_id,
            sa.func.left(front_page.c.title, TITLE_CHARS + 1).label("title"),
            front_page.c.author, front_page.c.permalink, front_page.c.flair, front_page.c.score,
            front_page.c.num_comments, front_page.c.stickied, front_page.c.over_18, front_page.c.created_utc,
        )
        .where(front_page.c.subreddit == subreddit, front_page.c.snapshot_at.between(oldest, latest))
        .order_by(front_page.c.snapshot_at, front_page.c.rank)
    ).mappings().all()
    order = sorted(snapshots)  # oldest first
    ranks: dict[str, list[int | None]] = {}
    for row in rows:
        history = ranks.setdefault(row["post_id"], [None] * len(order))
        history[order.index(row["snapshot_at"])] = row["rank"]
    now = conn.execute(sa.select(sa.func.now())).scalar_one()
    current = []
    for row in rows:
        if row["snapshot_at"] != latest:
            continue
        history = ranks[row["post_id"]]
        current.append({
            "rank": row["rank"],
            "movement": rank_movement(history[-2] if len(history) > 1 else None, row["rank"], len(history)),
            "rank_history": history,
            "title": display_title(row["title"]),
            "url": post_url(row["permalink"], row["post_id"], subreddit),
            "author": row["author"],
            "flair": row["flair"],
            "score": row["score"],
            "comments": row["num_comments"],
            "age": format_age((now - row["created_utc"]).total_seconds()),
            "stickied": row["stickied"],
            "nsfw": row["over_18"],
        })
    return FrontPage(subreddit=subreddit, snapshot_at=latest, snapshots_compared=len(order), rows=current)


def read_activity(conn: Connection, unit: str) -> list[dict[str, Any]]:
    """Posts recorded and events sent per hour (last 48) or per day (last 30), empty buckets included."""
    periods = ACTIVITY_PERIODS[unit]
    size = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    now = conn.execute(sa.select(sa.func.now())).scalar_one()  # UTC: read_dashboard sets the zone
    current = now.replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        current = current.replace(hour=0)
    start = current - size * (periods - 1)
    posts_per = dict(
        conn.execute(
            sa.select(sa.func.date_trunc(unit, posts.c.first_seen_at).label("bucket"), sa.func.count())
            .where(posts.c.first_seen_at >= start)
            .group_by(sa.literal_column("bucket"))
        ).all()
    )
    events_per = dict(
        conn.execute(
            sa.select(sa.func.date_trunc(unit, event_outbox.c.sent_at).label("bucket"), sa.func.count())
            .where(event_outbox.c.sent_at >= start)
            .group_by(sa.literal_column("bucket"))
        ).all()
    )
    buckets = [start + size * n for n in range(periods)]
    return [
        {"bucket": bucket, "posts recorded": posts_per.get(bucket, 0), "events sent": events_per.get(bucket, 0)}
        for bucket in buckets
    ]


def post_url(permalink: str | None, post_id: str, subreddit: str) -> str:
    """The post on reddit.com; a permalink that is not a plain path is replaced by the canonical one."""
    if permalink and _PERMALINK.match(permalink) and not permalink.startswith("//"):
        return REDDIT_URL + permalink
    return f"{REDDIT_URL}/comments/{post_id}/"


def display_title(title: str | None) -> str:
    title = title or ""
    return title if len(title) <= TITLE_CHARS else title[:TITLE_CHARS] + "…"


def rank_movement(previous: int | None, current: int, snapshots: int) -> str:
    if snapshots < 2:
        return ""
    if previous is None:
        return "new"
    if previous == current:
        return "="
    return f"▲ {previous - current}" if previous > current else f"▼ {current - previous}"


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0.0, seconds)
    for size, suffix in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{int(seconds // size)}{suffix}"
    return f"{int(seconds)}s"


def format_count(count: int) -> str:
    """Short enough for a metric tile: exact below a million, then 1.23M."""
    return f"{count:,}" if count < 1_000_000 else f"{count / 1_000_000:.2f}M"


def escape_markdown(text: str) -> str:
    """Backslash-escape every character Streamlit's markdown gives a meaning (for our own messages
    that carry configured names or database errors; Reddit text never goes through markdown)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text.replace("\n", " "))


def _first_line(exc: BaseException | None) -> str:
    return db.first_line(exc) if exc is not None else "unknown error"
