"""The /new walk that never misses a post, the front-page snapshot, and one poll_log row per poll.

The walk (DESIGN §3.5): read /r/{sub}/new from the top and follow `after` page by page until the
walk has passed `overlap_margin` posts that are already recorded, or the listing ends. The
margin catches late mod-approved posts, which reappear in /new at their original time, below
posts already recorded. No `before=` cursor and no id or time high-water mark is ever used: the
database's set of recorded ids is the only state.

Everything the walk found is committed at once, after the walk (record_new_posts: one
transaction). Committing page 1 of a 250-post burst and then failing on page 2 would make the
next walk meet page 1 as "known", stop early, and lose the rest; so a failure anywhere in the
walk records nothing, and the next poll starts over.

An empty page in mid-walk usually means the `after` anchor vanished (deleted or removed posts
are taken out of the listing, and an anchor not in the listing gives an empty page): the walk
restarts from the top, a bounded number of times. The real end of a listing whose last page is
full looks the same: an empty page is the end when the walk has already seen ~1000 posts (the
listing cap), or when the same anchor answers with an empty page again after a restart (a
subreddit whose size is a multiple of 100).

A gap: the walk reached the end of the reachable listing without meeting any recorded post while
the database already holds posts of the subreddit. Posts between the oldest reachable one and
the newest recorded one may be lost for good. (All recorded posts having left the listing, by
deletion or removal, looks the same; the incident says "may".) The reachable posts are recorded anyway, the
poll_log row says gap=true and a "gap" incident opens. Later polls that meet known posts again
do not close it: a gap is a permanent loss an operator has to look at and resolve.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster import logs
from reddit_dagster.posts import Post
from reddit_dagster.reddit import RedditClient, RedditError
from reddit_dagster.schema import posts as posts_table
from reddit_dagster.settings import Settings
from reddit_dagster.store import (
    PollRecord,
    known_post_ids,
    open_incident,
    record_new_posts,
    save_front_page,
    write_poll_log,
)

log = logs.get_logger(__name__)

MAX_WALK_RESTARTS = 3
# Reddit's listings hold about this many items (r2 MAX_CACHED_ITEMS); an empty page after a walk
# this long is the cap, not a vanished anchor.
LISTING_CAP = 1000
# A loop bound, far above the ~10 pages Reddit's ~1000-item listings have: a walk this long means
# a listing that never ends (a cursor cycle), not a big subreddit.
MAX_WALK_PAGES = 50


class ListingUnstable(RedditError):
    """The listing kept losing the walk's anchor; nothing was recorded."""


@dataclass
class PollResult:
    subreddit: str
    kind: str = "poll"  # poll | reconcile | backfill
    new_ids: list[str] = field(default_factory=list)
    fetched: int = 0  # posts received, over all pages (and restarts) of the walk
    pages: int = 0
    requests: int = 0  # HTTP requests sent for this poll, retries and token requests included
    reached_known: bool | None = None
    gap: bool = False
    front_page_rows: int = 0
    ratelimit_remaining: float | None = None
    error: str | None = None
    dates_touched: list[str] = field(default_factory=list)  # sorted UTC creation dates of new posts
    skipped: int = 0  # listing children that could not be parsed as posts
    restarts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        head = f"r/{self.subreddit} {self.kind}"
        counts = f"{len(self.new_ids)} new, {self.fetched} fetched, {self.pages} pages, {self.requests} requests"
        if not self.ok:
            return f"error: {head} failed ({counts}): {self.error}"
        parts = [counts, f"front page {self.front_page_rows} rows"]
        if self.reached_known is not None:
            parts.append("reached known posts" if self.reached_known else "no known post met")
        if self.restarts:
            parts.append(f"{self.restarts} restarts")
        if self.skipped:
            parts.append(f"{self.skipped} unparseable children skipped")
        if self.ratelimit_remaining is not None:
            parts.append(f"rate limit remaining {self.ratelimit_remaining:g}")
        line = f"{head}: " + ", ".join(parts)
        if self.gap:
            line += " -- GAP: reached the end of the listing without meeting a recorded post; posts may be lost"
        return line


@dataclass
class _Walk:
    """What a walk found; filled as it goes, so a failed walk still reports how far it got."""

    found: dict[str, Post] = field(default_factory=dict)  # posts not recorded yet, by id
    known_ids: set[str] = field(default_factory=set)
    pages: int = 0
    fetched: int = 0
    skipped: int = 0
    restarts: int = 0
    reached_end: bool = False


def has_recorded_posts(engine: Engine, subreddit: str) -> bool:
    """Whether any post of this subreddit is recorded. Case-insensitive: SUBREDDITS may spell a
    name differently from Reddit's `subreddit` field, which is what the posts table stores."""
    stmt = sa.select(sa.exists().where(sa.func.lower(posts_table.c.subreddit) == subreddit.lower()))
    with engine.connect() as conn:
        return conn.execute(stmt).scalar() is True


def walk_new(
    engine: Engine,
    client: RedditClient,
    subreddit: str,
    walk: _Walk,
    *,
    overlap_margin: int,
    deep: bool,
    max_restarts: int = MAX_WALK_RESTARTS,
) -> None:
    """Walk /new from the top into `walk`; raises RedditError (then nothing may be recorded)."""
    enough_known = max(overlap_margin, 1)
    empty_after: set[str] = set()  # anchors that already answered with an empty page
    for _attempt in range(max_restarts + 1):
        walk.found.clear()
        walk.known_ids.clear()
        after: str | None = None
        for _page in range(MAX_WALK_PAGES):
            listing = client.new(subreddit, after=after)
            walk.pages += 1
            walk.fetched += len(listing.posts)
            walk.skipped += len(listing.skipped)
            if after is not None and listing.empty:
                if after in empty_after or len(walk.found) + len(walk.known_ids) >= LISTING_CAP:
                    walk.reached_end = True  # the anchor is still listed and nothing follows it
                    return
                empty_after.add(after)
                break  # the anchor probably vanished: restart from the top
            page_ids = [post.id for post in listing.posts]
            known = known_post_ids(engine, page_ids)
            walk.known_ids |= known
            for post in listing.posts:
                if post.id not in known:
                    walk.found.setdefault(post.id, post)
            if listing.after is None:
                walk.reached_end = True
                return
            if not deep and len(walk.known_ids) >= enough_known:
                return
            after = listing.after
        else:
            raise ListingUnstable(f"r/{subreddit}/new: the listing did not end within {MAX_WALK_PAGES} pages")
        walk.restarts += 1
        log.info("walk_restarted", subreddit=subreddit, after=after, restarts=walk.restarts,
                 reason="empty page mid-walk: the anchor probably vanished")
    raise ListingUnstable(
        f"r/{subreddit}/new: the walk's anchor vanished {walk.restarts} times in a row "
        "(empty pages mid-walk); nothing recorded, the next poll starts over"
    )


def poll_subreddit(
    engine: Engine,
    client: RedditClient,
    subreddit: str,
    *,
    overlap_margin: int = 50,
    deep: bool = False,
    kind: str = "poll",
    run_id: str | None = None,
    snapshot_front_page: bool = True,
    max_restarts: int = MAX_WALK_RESTARTS,
) -> PollResult:
    """Walk /new, record what is new (with outbox rows), snapshot /hot, write a poll_log row.

    Never raises for Reddit errors: the result (and the poll_log row) carries the error. The
    first poll of a subreddit (nothing recorded yet) and deep=True walk the whole reachable listing.
    """
    started_at = datetime.now(UTC)
    started = time.monotonic()
    plog = log.bind(subreddit=subreddit, kind=kind, **({"run_id": run_id} if run_id else {}))
    plog.info("poll_started", deep=deep)
    requests_before = client.requests_made
    result = PollResult(subreddit=subreddit, kind=kind)
    walk = _Walk()
    try:
        had_posts = has_recorded_posts(engine, subreddit)
        try:
            walk_new(
                engine,
                client,
                subreddit,
                walk,
                overlap_margin=overlap_margin,
                deep=deep or not had_posts,
                max_restarts=max_restarts,
            )
        finally:
            result.pages, result.fetched = walk.pages, walk.fetched
            result.skipped, result.restarts = walk.skipped, walk.restarts
        result.reached_known = bool(walk.known_ids)
        result.gap = walk.reached_end and had_posts and not walk.known_ids and bool(walk.found)
        new_posts = list(walk.found.values())
        result.new_ids = record_new_posts(engine, new_posts)
        result.dates_touched = creation_dates(new_posts, result.new_ids)
        for post_id in result.new_ids:
            plog.info("post_recorded", post_id=post_id)
        if result.gap:
            open_incident(
                engine,
                "gap",
                subreddit,
                f"r/{subreddit}: the {kind} reached the end of the reachable listing ({walk.pages} pages, "
                f"{walk.fetched} posts) without meeting a recorded post; posts older than the listing "
                "reaches and newer than the last recorded ones may be lost",
                run_id=run_id,
            )
            plog.warning("gap_detected", pages=walk.pages, fetched=walk.fetched,
                         reason="the walk reached the end of the listing without meeting a recorded post")
        if snapshot_front_page:
            try:
                hot = client.hot(subreddit)
            except RedditError as exc:  # the new posts above are recorded; only the snapshot failed
                result.error = f"front page: {type(exc).__name__}: {exc}"
            else:
                result.front_page_rows = save_front_page(engine, subreddit, hot.posts, datetime.now(UTC))
    except RedditError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.requests = client.requests_made - requests_before
    result.ratelimit_remaining = client.ratelimit_remaining
    (plog.warning if result.error else plog.info)(
        "poll_finished", ok=result.ok, new_posts=len(result.new_ids), fetched=result.fetched, pages=result.pages,
        requests=result.requests, reached_known=result.reached_known, gap=result.gap, error=result.error,
        front_page_rows=result.front_page_rows, ratelimit_remaining=result.ratelimit_remaining,
        duration_ms=logs.elapsed_ms(started),
    )
    write_poll_log(
        engine,
        PollRecord(
            subreddit=subreddit,
            started_at=started_at,
            kind=kind,
            requests=result.requests,
            pages=result.pages,
            fetched=result.fetched,
            new_posts=len(result.new_ids),
            reached_known=result.reached_known,
            gap=result.gap,
            ratelimit_remaining=client.ratelimit_remaining,
            ratelimit_reset_s=client.ratelimit_reset_s,
            error=result.error,
            run_id=run_id,
        ),
    )
    return result


def creation_dates(posts: Iterable[Post], ids: Iterable[str]) -> list[str]:
    """Sorted 'YYYY-MM-DD' UTC creation dates of the posts with these ids (the daily partitions)."""
    wanted = set(ids)
    return sorted({post.created_at.date().isoformat() for post in posts if post.id in wanted})


def poll_subreddits(
    engine: Engine, settings: Settings, *, run_id: str | None = None, kind: str = "poll", deep: bool = False
) -> list[PollResult]:
    """Poll every subreddit of SUBREDDITS with one client (one token, one rate-limit budget)."""
    client = RedditClient.from_settings(settings)
    try:
        return [
            poll_subreddit(
                engine, client, subreddit, overlap_margin=settings.overlap_margin, deep=deep, kind=kind, run_id=run_id
            )
            for subreddit in settings.subreddits
        ]
    finally:
        client.close()


def reconcile(
    engine: Engine, settings: Settings, subreddit: str, *, run_id: str | None = None, kind: str = "reconcile"
) -> PollResult:
    """Deep walk: the whole reachable listing (~1000 posts), recording anything missing, e.g. posts
    approved late further down than the overlap margin reaches. No front-page snapshot."""
    client = RedditClient.from_settings(settings)
    try:
        return poll_subreddit(
            engine,
            client,
            subreddit,
            overlap_margin=settings.overlap_margin,
            deep=True,
            kind=kind,
            run_id=run_id,
            snapshot_front_page=False,
        )
    finally:
        client.close()
