"""The atomic record path under real concurrency and real crashes (issue 2, DESIGN §3.1)."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reddit_dagster.events import EVENT_TYPE, insert_id_for
from reddit_dagster.posts import Post, parse_post
from reddit_dagster.schema import event_outbox, posts
from reddit_dagster.store import record_new_posts

pytestmark = pytest.mark.timeout(240)

PROCESSES = 8
POSTS = 2000
ROUNDS = 3
BASE_TIME = 1_767_225_600.0


def make_post(n: int, **fields: object) -> Post:
    data = {
        "id": f"p{n:06x}",
        "created_utc": BASE_TIME + n,
        "title": f"post {n}",
        "author": f"author_{n % 37}",
        "subreddit": "healthcare",
    }
    data.update(fields)
    return parse_post({"kind": "t3", "data": data})


def _record_subset(db_url: str, seed: int, barrier: mp.synchronize.Barrier, queue: mp.Queue) -> None:
    """One competing recorder: a random overlapping subset, in random chunks and order."""
    os.environ["DATABASE_URL"] = db_url
    from reddit_dagster import db

    engine = db.create_engine(db.app_url())
    rng = random.Random(seed)
    # Each process owns one slice (so the union covers every post) plus a random 60% of the rest.
    mine = [n for n in range(POSTS) if n % PROCESSES == seed % PROCESSES or rng.random() < 0.6]
    rng.shuffle(mine)
    chunks: list[list[int]] = []
    while mine:
        size = rng.randint(20, 300)
        chunks.append(mine[:size])
        mine = mine[size:]
    barrier.wait(timeout=60)
    reported: list[str] = []
    for chunk in chunks:
        reported += record_new_posts(engine, [make_post(n) for n in chunk])
    queue.put((seed, reported))


def test_overlapping_concurrent_recorders_each_post_new_exactly_once(engine: Engine, libpq_database_url: str):
    ctx = mp.get_context("spawn")
    for round_no in range(ROUNDS):
        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE posts, event_outbox"))
        barrier = ctx.Barrier(PROCESSES)
        queue = ctx.Queue()
        procs = [
            ctx.Process(target=_record_subset, args=(libpq_database_url, round_no * 100 + i, barrier, queue))
            for i in range(PROCESSES)
        ]
        for proc in procs:
            proc.start()
        results = [queue.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
            assert proc.exitcode == 0

        reported_counts: dict[str, int] = {}
        for _seed, reported in results:
            for post_id in reported:
                reported_counts[post_id] = reported_counts.get(post_id, 0) + 1
        with engine.connect() as conn:
            n_posts = conn.execute(sa.select(sa.func.count()).select_from(posts)).scalar_one()
            n_outbox = conn.execute(sa.select(sa.func.count()).select_from(event_outbox)).scalar_one()
        assert n_posts == POSTS, f"round {round_no}"
        assert n_outbox == POSTS, f"round {round_no}"
        assert len(reported_counts) == POSTS
        assert set(reported_counts.values()) == {1}, "a post was reported new by two processes"
        # More than one process must have won something, or the race was not a race.
        assert sum(1 for _seed, reported in results if reported) > 1


def test_record_is_idempotent_and_freezes_the_event(engine: Engine):
    batch = [make_post(n) for n in range(10)]
    assert record_new_posts(engine, batch) == sorted(p.id for p in batch)
    assert record_new_posts(engine, [*batch, make_post(10)]) == [make_post(10).id]
    assert record_new_posts(engine, []) == []
    with engine.connect() as conn:
        row = conn.execute(sa.select(event_outbox).where(event_outbox.c.post_id == "p000003")).mappings().one()
    assert row["insert_id"] == insert_id_for("p000003")
    assert row["status"] == "pending"
    assert row["payload"]["insert_id"] == row["insert_id"]
    assert row["payload"]["event_type"] == EVENT_TYPE
    assert row["payload"]["time"] == int((BASE_TIME + 3) * 1000)


def test_nul_bytes_and_lone_surrogates_are_stored(engine: Engine):
    post = make_post(1, title="bad\x00title \ud800 end", selftext="a\x00b", author="nul\x00guy")
    assert record_new_posts(engine, [post]) == [post.id]
    with engine.connect() as conn:
        row = conn.execute(sa.select(posts).where(posts.c.id == post.id)).mappings().one()
    assert row["title"] == "bad\ufffdtitle \ufffd end"
    assert row["raw"]["selftext"] == "a\ufffdb"
    assert row["author"] == "nul\ufffdguy"


def test_duplicates_within_one_batch_are_recorded_once(engine: Engine):
    post = make_post(5)
    assert record_new_posts(engine, [post, post, make_post(5, title="same id, newer title")]) == [post.id]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(event_outbox)).scalar_one() == 1


KILL_SCRIPT = """
import sys
from reddit_dagster import db
from tests.test_record import make_post
from reddit_dagster.store import record_new_posts
engine = db.create_engine(db.app_url())
start, size = int(sys.argv[1]), int(sys.argv[2])
print("ready", flush=True)
n = start
while True:  # records batches until killed
    record_new_posts(engine, [make_post(i) for i in range(n, n + size)])
    n += size
"""


def _start_recorder(child_env: dict[str, str], start: int, size: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(start), str(size)],
        env=child_env,
        stdout=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)  # a poll interval, not a race fix: the condition decides
    return False


def _orphan_posts(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count())
            .select_from(posts.outerjoin(event_outbox, event_outbox.c.post_id == posts.c.id))
            .where(event_outbox.c.insert_id.is_(None))
        ).scalar_one()


def test_sigkill_inside_the_record_statement_commits_nothing(engine: Engine, child_env: dict[str, str]):
    """Deterministic: the child is provably inside its INSERT (blocked on a row we hold) when killed."""
    blocker = make_post(250)  # sorts in the middle of the child's first batch (ids 0..499)
    with engine.connect() as holder:
        tx = holder.begin()
        holder.execute(sa.text("INSERT INTO posts (id, subreddit, title, created_utc, permalink, raw) "
                               "VALUES (:id, 'healthcare', 't', now(), '/x', '{}')"), {"id": blocker.id})
        proc = _start_recorder(child_env, 0, 500)
        try:
            def child_blocked() -> bool:
                with engine.connect() as conn:
                    return bool(conn.execute(sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        # psycopg2 inlines the rows, so only the statement's start is visible here.
                        "AND wait_event_type = 'Lock' AND query ILIKE '%jsonb_to_recordset%'"
                    )).scalar_one())

            if not _wait_until(child_blocked, 60):
                with engine.connect() as conn:
                    activity = conn.execute(sa.text(
                        "SELECT state, wait_event_type, left(query, 40) FROM pg_stat_activity "
                        "WHERE datname = current_database()")).all()
                pytest.fail(f"the recorder never reached the blocked INSERT: {activity}")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            tx.rollback()
    assert proc.returncode == -signal.SIGKILL
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(posts)).scalar_one() == 0
    assert _orphan_posts(engine) == 0


def test_sigkill_at_random_moments_leaves_no_post_without_outbox_row(engine: Engine, child_env: dict[str, str]):
    rng = random.Random(7)
    for attempt in range(5):
        proc = _start_recorder(child_env, attempt * 1_000_000, 200)
        try:
            before = _count_posts(engine)
            # Let it commit a random number of batches, then kill it wherever it is.
            target = before + 200 * rng.randint(1, 4)
            assert _wait_until(lambda target=target: _count_posts(engine) >= target, 60)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    assert _orphan_posts(engine) == 0
    assert _count_posts(engine) % 200 == 0, "a partial batch was committed"


def _count_posts(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(posts)).scalar_one()
