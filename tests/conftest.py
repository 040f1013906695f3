"""Shared fixtures: a fresh PostgreSQL database per test session, real fakes of Reddit and Amplitude.

The database is created on the server DATABASE_URL points at, or on the embedded server under
.data/ when it is unset, with a unique name, so concurrent test runs never share state. It is
dropped at the end of the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from reddit_dagster import db
from reddit_dagster.schema import metadata

pytest_plugins = ["tests.fixtures_fakes_reddit", "tests.fixtures_fakes_amplitude", "tests.fixtures_dagster"]

# Tests must never reach real services, whatever the developer's shell exports.
for _name in (
    "REDDIT_CLIENT_ID",
    "REDDIT_CLIENT_SECRET",
    "AMPLITUDE_API_KEY",
    "AMPLITUDE_SERVER_URL",
    "REDDIT_API_URL",
    "REDDIT_WWW_URL",
    "SUBREDDITS",
):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def database_url() -> Iterator[URL]:
    base = db.app_url()
    url = base.set(database=f"rdtest_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    yield url
    db.drop_database(url)


@pytest.fixture(scope="session")
def libpq_database_url(database_url: URL) -> str:
    """The test database as a plain postgresql:// URL, as a user would put in DATABASE_URL."""
    return db.libpq_url(database_url)


@pytest.fixture(scope="session")
def _session_engine(database_url: URL) -> Iterator[Engine]:
    engine = db.create_engine(database_url)
    yield engine
    engine.dispose()


def truncate_all(engine: Engine) -> None:
    names = ", ".join(table.name for table in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def engine(_session_engine: Engine) -> Engine:
    """The session's database, emptied before the test."""
    truncate_all(_session_engine)
    return _session_engine


@pytest.fixture
def child_env(libpq_database_url: str) -> dict[str, str]:
    """Environment for subprocesses of a test: the test database, no real services."""
    env = dict(os.environ)
    env["DATABASE_URL"] = libpq_database_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
