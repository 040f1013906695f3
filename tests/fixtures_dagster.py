"""Fixtures for the Dagster layer's tests: instances on PostgreSQL, the pipeline pointed at the fakes.

Registered in conftest.py through pytest_plugins.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from reddit_dagster import db
from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit

AMPLITUDE_KEY = "test-amplitude-key"
SUBREDDIT = "healthcare"


@pytest.fixture(scope="session")
def dagster_storage_url(database_url: URL) -> Iterator[URL]:
    """Dagster's own storage for the session: a database beside the test database (psycopg2 URL)."""
    url = db.dagster_url(database_url)
    db.ensure_database(url)
    yield url
    db.drop_database(url)


@pytest.fixture
def dagster_instance(dagster_storage_url: URL, tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on PostgreSQL (never SQLite); compute logs under tmp_path."""
    overrides = {
        "storage": {"postgres": {"postgres_url": dagster_storage_url.render_as_string(hide_password=False)}},
        "compute_logs": {
            "module": "dagster.core.storage.local_compute_log_manager",
            "class": "LocalComputeLogManager",
            "config": {"base_dir": str(tmp_path / "compute_logs")},
        },
    }
    with dg.instance_for_test(overrides=overrides) as instance:
        yield instance


@pytest.fixture
def pipeline_env(
    monkeypatch: pytest.MonkeyPatch, libpq_database_url: str, fake_reddit: FakeReddit, fake_amplitude: FakeAmplitude
) -> dict[str, str]:
    """The environment a deployment would have, pointing the pipeline at the test database and the
    fakes; set in os.environ, where the resources read it at run time."""
    env = {
        "DATABASE_URL": libpq_database_url,
        "SUBREDDITS": SUBREDDIT,
        "REDDIT_API_URL": fake_reddit.url,
        "REDDIT_WWW_URL": fake_reddit.url,
        "AMPLITUDE_SERVER_URL": f"{fake_amplitude.url}/2/httpapi",
        "AMPLITUDE_API_KEY": AMPLITUDE_KEY,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def table_rows_containing(url: URL, needles: list[str]) -> dict[str, int]:
    """Rows of every table in url's database whose text form contains any needle: {table: rows}."""
    engine = db.create_engine(url, poolclass=sa.pool.NullPool)
    found: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            tables = conn.scalars(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
            ).all()
            for table in tables:
                quoted = conn.dialect.identifier_preparer.quote(table)
                for needle in needles:
                    count = conn.execute(
                        sa.text(f"SELECT count(*) FROM {quoted} t WHERE t::text LIKE :pattern"),  # noqa: S608
                        {"pattern": f"%{needle}%"},
                    ).scalar_one()
                    if count:
                        found[f"{table}:{needle}"] = count
    finally:
        engine.dispose()
    return found


def files_containing(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}:{needle}" for needle in needles if needle.encode() in data]
    return hits
