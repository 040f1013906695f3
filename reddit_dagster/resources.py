"""Dagster resources: typed configuration for the plain functions, bound to environment variables.

Each field is optional. In `definitions.py` a field is bound to `EnvVar(NAME)` when NAME is set in
the code location's environment, so Dagster stores only the variable's name (the UI shows
"EnvVar REDDIT_CLIENT_SECRET") and resolves the value in the run's own process. A field left unset
falls back to `Settings`, which reads the same variables (DESIGN §6) at run time. Either way no
secret value reaches the definitions snapshot, run config, logs or the event log.
"""


import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr
from sqlalchemy.engine import Engine

from reddit_dagster import db
from reddit_dagster.alerts import PENDING_WARN_S
from reddit_dagster.settings import Settings

# Checks' thresholds (seconds). Amplitude's insert_id dedupe lasts 7 days: an event still pending
# after 2 days is an ERROR, so an operator has days to act before a resend could duplicate it.
PENDING_ERROR_S = 2 * 86400
FRONT_PAGE_MAX_AGE_S = 1800

_UPGRADED: set[str] = set()  # databases this process has migrated already


def env_var(name: str) -> dg.EnvVar | None:
    """EnvVar(name) if the variable is set now, else None (a bound EnvVar that is unset fails the run).

    Only the presence is read at definition time; the value is resolved in the run's process."""
    return dg.EnvVar(name) if os.environ.get(name) else None


class PostgresResource(dg.ConfigurableResource):
    """The pipeline's database. Unset: DATABASE_URL, else the embedded server under .data/."""

    database_url: str | None = None


class RedditResource(dg.ConfigurableResource):
    """Reddit API access; unset fields take the environment's values or the defaults of Settings."""

    subreddits: str | None = None  # comma-separated
    client_id: str | None = None
    client_secret: str | None = None
    user_agent: str | None = None
    api_url: str | None = None
    www_url: str | None = None


class AmplitudeResource(dg.ConfigurableResource):
    """Amplitude's HTTP V2 API. Without an API key events stay pending and nothing is lost."""

    api_key: str | None = None
    server_url: str | None = None


class PipelineResource(dg.ConfigurableResource):
    """What every asset, check and sensor needs: Settings for the plain functions and one engine."""

    postgres: PostgresResource
    reddit: RedditResource
    amplitude: AmplitudeResource
    pending_warn_s: int = PENDING_WARN_S
    pending_error_s: int = PENDING_ERROR_S
    front_page_max_age_s: int = FRONT_PAGE_MAX_AGE_S

    _engine: Engine | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        overrides: dict[str, Any] = {
            "database_url": self.postgres.database_url,
            "subreddits": self.reddit.subreddits,
            "reddit_client_id": self.reddit.client_id,
            "reddit_client_secret": self.reddit.client_secret,
            "reddit_user_agent": self.reddit.user_agent,
            "reddit_api_url": self.reddit.api_url,
            "reddit_www_url": self.reddit.www_url,
            "amplitude_api_key": self.amplitude.api_key,
            "amplitude_server_url": self.amplitude.server_url,
        }
        # Explicit values win over the environment; None means "as the environment says".
        return Settings(**{key: value for key, value in overrides.items() if value is not None})

    def engine(self, *, upgrade: bool = True) -> Engine:
        """The application database's engine, created once per run (migrations applied first,
        once per process and database)."""
        if self._engine is None:
            self._engine = db.create_engine(db.app_url(self.settings()))
        url = self._engine.url.render_as_string(hide_password=False)
        if upgrade and url not in _UPGRADED:
            db.upgrade(self._engine.url)
            _UPGRADED.add(url)
        return self._engine

    @contextmanager
    def short_lived_engine(self) -> Iterator[Engine]:
        """An engine without a pool for one sensor tick (no migrations: a tick only reads or logs)."""
        engine = db.create_engine(db.app_url(self.settings()), poolclass=sa.pool.NullPool)
        try:
            yield engine
        finally:
            engine.dispose()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def pipeline_from_env() -> PipelineResource:
    """The resource as `definitions.py` binds it: every variable that is set becomes an EnvVar."""
    return PipelineResource(
        postgres=PostgresResource(database_url=env_var("DATABASE_URL")),
        reddit=RedditResource(
            subreddits=env_var("SUBREDDITS"),
            client_id=env_var("REDDIT_CLIENT_ID"),
            client_secret=env_var("REDDIT_CLIENT_SECRET"),
            user_agent=env_var("REDDIT_USER_AGENT"),
            api_url=env_var("REDDIT_API_URL"),
            www_url=env_var("REDDIT_WWW_URL"),
        ),
        amplitude=AmplitudeResource(
            api_key=env_var("AMPLITUDE_API_KEY"), server_url=env_var("AMPLITUDE_SERVER_URL")
        ),
    )


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The Definitions' resources. The parts are top-level resources too, so the UI lists each with
    the variables it reads (nested-only resources are not shown)."""
    pipeline = pipeline_from_env()
    return {
        "pipeline": pipeline,
        "postgres": pipeline.postgres,
        "reddit": pipeline.reddit,
        "amplitude": pipeline.amplitude,
    }
