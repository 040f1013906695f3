"""One Reddit request budget shared by every process that polls with the same OAuth client id.

Reddit counts requests per OAuth client id (research/reddit.md §2: about 1000 per 600 s window,
reported in x-ratelimit-used/-remaining/-reset). RedditClient paces itself from those headers,
but each process only sees them after its own requests: several workers polling at once would
each spend "the" remaining budget and draw 429s together. So, with REDDIT_SHARED_LIMIT=1, every
metered request first takes a token from a bucket kept in one PostgreSQL row per client id:

- The bucket holds at most `burst` tokens and refills at (budget - burst) / (window + 1 s) per
  second, so in ANY span of one window at most `budget` requests are granted, whatever the
  alignment of Reddit's window and however many processes ask. The extra second absorbs Reddit's
  whole-second reset values and the time a granted request takes to arrive.
- Each row is read and written under SELECT ... FOR UPDATE on the database's clock, so concurrent
  processes (and hosts with skewed clocks) serialise on it correctly.
- Every response's headers are recorded in the row (`observe`), so all workers act on what any
  of them learnt: remaining below one (budget spent by someone outside the limiter) or a 429
  blocks every worker until Reddit's reset (or retry-after); a low remaining caps the bucket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from reddit_dagster.reddit import RedditUnavailable
from reddit_dagster.schema import reddit_rate_limit

if TYPE_CHECKING:
    from reddit_dagster.settings import Settings

PUBLIC_KEY = "public"  # requests without OAuth are counted per address by Reddit: one bucket for them
ALIGNMENT_SLACK_S = 1.0
MAX_BURST = 10


class RateLimitTimeout(RedditUnavailable):
    """No request could be granted within max_wait_s (the shared budget is spent or blocked)."""


@dataclass(frozen=True)
class Grant:
    """The outcome of one try: granted now, or how long to wait before trying again."""

    granted: bool
    wait_s: float


class SharedRateLimiter:
    """A token bucket per client key in PostgreSQL; safe to use from any number of processes."""

    def __init__(
        self,
        engine: Engine,
        client_key: str,
        *,
        budget: int = 1000,
        window_s: float = 600.0,
        burst: int | None = None,
        max_wait_s: float = 900.0,
        owns_engine: bool = False,
    ) -> None:
        if budget < 2 or window_s <= 0:
            raise ValueError("the rate budget must be at least 2 requests over a positive window")
        self.engine = engine
        self.client_key = client_key
        self.budget = budget
        self.window_s = window_s
        self.burst = max(1, min(burst if burst is not None else MAX_BURST, budget // 2))
        self.rate_per_s = (budget - self.burst) / (window_s + ALIGNMENT_SLACK_S)
        self.max_wait_s = max_wait_s
        self.waited_s = 0.0  # total time this process spent waiting for the budget
        self._owns_engine = owns_engine
        self._row_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SharedRateLimiter:
        from reddit_dagster import db  # local: db pulls in settings and engines, only needed here

        engine = db.create_engine(db.app_url(settings), pool_size=1, max_overflow=2)
        return cls(
            engine,
            settings.reddit_client_id or PUBLIC_KEY,
            budget=settings.reddit_rate_budget,
            window_s=settings.reddit_rate_window_s,
            owns_engine=True,
        )

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    # --- taking a token ---------------------------------------------------------------------------

    def acquire(self) -> float:
        """Block until one request may be sent; returns the seconds waited. Raises RateLimitTimeout."""
        deadline = time.monotonic() + self.max_wait_s
        waited = 0.0
        while True:
            grant = self.try_acquire()
            if grant.granted:
                self.waited_s += waited
                return waited
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.waited_s += waited
                raise RateLimitTimeout(
                    f"the shared Reddit request budget of {self.client_key!r} granted nothing within "
                    f"{self.max_wait_s:g} s (spent, or blocked by Reddit's rate-limit headers)"
                )
            pause = min(grant.wait_s, remaining)
            time.sleep(pause)
            waited += pause

    def try_acquire(self) -> Grant:
        """Take a token if one is there (one short transaction on the client's row)."""
        self._ensure_row()
        table = reddit_rate_limit
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(table.c.tokens, table.c.refilled_at, table.c.blocked_until, sa.func.clock_timestamp())
                .where(table.c.client_key == self.client_key)
                .with_for_update()
            ).one()
            tokens, refilled_at, blocked_until, now = row
            elapsed = max((now - refilled_at).total_seconds(), 0.0)
            tokens = min(float(self.burst), tokens + elapsed * self.rate_per_s)
            values: dict[str, object] = {"tokens": tokens, "refilled_at": now}
            if blocked_until is not None and blocked_until > now:
                grant = Grant(False, (blocked_until - now).total_seconds())
            elif tokens >= 1.0:
                values |= {"tokens": tokens - 1.0, "granted": table.c.granted + 1}
                grant = Grant(True, 0.0)
            else:
                grant = Grant(False, (1.0 - tokens) / self.rate_per_s)
            conn.execute(sa.update(table).where(table.c.client_key == self.client_key).values(values))
        return grant

    # --- what Reddit reported ----------------------------------------------------------------------

    def observe(self, remaining: float | None, reset_s: float | None, *, retry_after_s: float | None = None) -> None:
        """Record a response's rate-limit headers (and a 429's retry-after) for every worker."""
        if remaining is None and retry_after_s is None:
            return
        self._ensure_row()
        table = reddit_rate_limit
        now = sa.func.clock_timestamp(type_=sa.DateTime(timezone=True))
        values: dict[str, object] = {}
        block_s: float | None = None
        if remaining is not None:
            values |= {"reported_remaining": remaining, "reported_reset_s": reset_s, "reported_at": now}
            # Never hold more tokens than Reddit says are left in its window.
            values["tokens"] = sa.func.least(table.c.tokens, max(remaining, 0.0))
            if remaining < 1:
                block_s = max(reset_s or 0.0, 1.0) + ALIGNMENT_SLACK_S
        if retry_after_s is not None:
            block_s = max(block_s or 0.0, retry_after_s)
        if block_s is not None:
            until = now + timedelta(seconds=block_s)
            values["blocked_until"] = sa.func.greatest(sa.func.coalesce(table.c.blocked_until, until), until)
        with self.engine.begin() as conn:
            conn.execute(sa.update(table).where(table.c.client_key == self.client_key).values(values))

    def state(self) -> dict[str, object]:
        """The shared row as it is now (for metadata, benchmarks and tests)."""
        self._ensure_row()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(reddit_rate_limit).where(reddit_rate_limit.c.client_key == self.client_key))
            return dict(row.mappings().one())

    def _ensure_row(self) -> None:
        if self._row_ready:
            return
        with self.engine.begin() as conn:
            conn.execute(
                pg_insert(reddit_rate_limit)
                .values(client_key=self.client_key, tokens=float(self.burst))
                .on_conflict_do_nothing(index_elements=[reddit_rate_limit.c.client_key])
            )
        self._row_ready = True

