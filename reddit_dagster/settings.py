"""All configuration, read from the environment in one place (names are a contract: DESIGN §6)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from reddit_dagster import __version__

AMPLITUDE_US_URL = "https://api2.amplitude.com/2/httpapi"


def project_root() -> Path:
    """The checkout's root when running from a source tree, else the current directory."""
    package_parent = Path(__file__).resolve().parent.parent
    return package_parent if (package_parent / "setup.py").exists() else Path.cwd()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    database_url: str | None = None
    subreddits: Annotated[list[str], NoDecode] = ["healthcare"]
    reddit_client_id: str | None = None
    reddit_client_secret: SecretStr | None = None
    reddit_user_agent: str = f"reddit-dagster/{__version__}"
    reddit_api_url: str = "https://oauth.reddit.com"
    reddit_www_url: str = "https://www.reddit.com"
    amplitude_api_key: SecretStr | None = None
    amplitude_server_url: str = AMPLITUDE_US_URL
    # Posts already recorded that a walk must pass before it stops: late mod-approved posts reappear
    # in /new at their original time, below posts we have already seen (DESIGN §3.5).
    overlap_margin: int = Field(default=50, ge=0, le=1000)
    # Scale-out (ratelimit.py): REDDIT_SHARED_LIMIT=1 makes every process draw Reddit requests from
    # one budget in PostgreSQL; set it whenever more than one process polls with the same client id.
    reddit_shared_limit: bool = False
    reddit_rate_budget: int = Field(default=1000, ge=2)  # requests per window, per OAuth client id
    reddit_rate_window_s: float = Field(default=600.0, gt=0)
    # Slack incoming-webhook compatible URL; each incident is posted once (alerts.py). A credential.
    alert_webhook_url: SecretStr | None = None
    data_dir: Path = Field(default_factory=lambda: project_root() / ".data")

    @field_validator("subreddits", mode="before")
    @classmethod
    def _split_subreddits(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(" ", "").split(",") if part]
        if isinstance(value, list):
            value = [str(name).removeprefix("r/").removeprefix("/r/") for name in value]
            if not value:
                raise ValueError("SUBREDDITS is empty")
        return value

    @field_validator("reddit_api_url", "reddit_www_url", "amplitude_server_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")


class LogSettings(BaseSettings):
    """LOG_FORMAT (json | console; default: console on a terminal, else json) and LOG_LEVEL (default
    INFO). Apart from Settings, and validated by logs.py with a warning instead of an error, so a
    typo in a logging variable never stops the pipeline."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    log_format: str | None = None
    log_level: str | None = None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
