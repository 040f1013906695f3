"""Structured logging: structlog over the stdlib logger "reddit_dagster", configured once per process.

Each event is rendered by structlog into one line (JSON when stderr is not a terminal, readable
key=value output on a terminal; LOG_FORMAT and LOG_LEVEL override) and handed to the stdlib logger
as its message. So every handler of that logger receives the same line: ours, which writes it to
stderr, and Dagster's, which dagster.yaml attaches during runs (python_logs.managed_python_loggers)
so the line also lands in the run's event log.

Secrets are removed by the last processor before rendering, so no handler ever sees them: the
values of the secret variables, any password in a URL, bearer tokens and Basic credentials, and
any value registered with add_secret() (a secret given to a client directly, not via the environment).

Field names are a contract (dashboards and log queries rely on them): event, subreddit, post_id,
insert_id, attempt, http_status, duration_ms, run_id (bound by the Dagster assets with bound()).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from reddit_dagster.settings import LogSettings

ROOT_LOGGER = "reddit_dagster"
REDACTED = "[REDACTED]"
FORMATS = ("json", "console")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Environment variables whose values are secrets, and URLs whose password is one.
SECRET_VARIABLES = ("REDDIT_CLIENT_SECRET", "AMPLITUDE_API_KEY", "ALERT_WEBHOOK_URL")
URL_VARIABLES = ("DATABASE_URL", "DAGSTER_PG_URL")
# Field names whose string values are secrets whatever they contain.
SECRET_FIELDS = frozenset(
    {"password", "secret", "client_secret", "api_key", "apikey", "token", "access_token", "authorization",
     "webhook_url"}
)
MIN_SECRET_CHARS = 4  # shorter "secrets" would redact ordinary words
_RENDERED = "_reddit_dagster_rendered"  # marks records whose message structlog rendered already

_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*:)([^@\s/]+)(@)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*")
_BASIC = re.compile(r"(?i)\b(basic\s+)([A-Za-z0-9+/]{4,}={0,2})")
_AUTH_HEADER = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)([^\"',}\s]+(?:\s+[^\"',}\s]+)?)")

_registered: set[str] = set()
_lock = threading.Lock()
_configured = False


# -- redaction ------------------------------------------------------------------------------------


def add_secret(value: str | None) -> None:
    """Redact this value from every later log event of the process (e.g. a key given in code)."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _lock:
            _registered.add(value)


def _secret_values() -> list[str]:
    values = set(_registered)
    for name in SECRET_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= MIN_SECRET_CHARS:
            values.add(value)
    for name in URL_VARIABLES:
        match = _URL_PASSWORD.search(os.environ.get(name, ""))
        if match and len(match.group(2)) >= MIN_SECRET_CHARS:
            values.add(match.group(2))
    # Longest first, so a secret containing another is removed whole.
    return sorted(values, key=len, reverse=True)


def _basic(match: re.Match[str]) -> str:
    """Basic credentials are base64 of "user:password"; other words after "basic" are left alone."""
    try:
        decoded = base64.b64decode(match.group(2) + "=" * (-len(match.group(2)) % 4), validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    return match.group(1) + REDACTED if b":" in decoded else match.group(0)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """The text without any secret value, URL password, bearer token or Basic credential."""
    for secret in _secret_values() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _BASIC.sub(_basic, text)


def _redact_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {key: _redact_field(str(key), item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item, secrets) for item in value]
    return redact(str(value), secrets)  # an object's text form is what a renderer would print


def _redact_field(key: str, value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str) and value and key.lower() in SECRET_FIELDS:
        return REDACTED
    return _redact_value(value, secrets)


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: removes secrets from every field of the event, keys kept."""
    secrets = _secret_values()
    return {key: _redact_field(key, value, secrets) for key, value in event_dict.items()}


def _event_first(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """timestamp, level, event, logger, then the fields: lines read left to right."""
    head = {key: event_dict[key] for key in ("timestamp", "level", "event", "logger") if key in event_dict}
    return head | {key: value for key, value in event_dict.items() if key not in head}


# -- configuration --------------------------------------------------------------------------------


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners and daemons replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _LineFormatter(structlog.stdlib.ProcessorFormatter):
    """Our events arrive rendered; a plain stdlib record (another library's, or an old-style call)
    goes through the same chain, so it is redacted and rendered alike."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _RENDERED, False):
            return record.getMessage()
        return super().format(record)


def _hand_to_stdlib(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
    """Last processor: the rendered line becomes the stdlib record's message, marked as rendered."""
    line = event_dict if isinstance(event_dict, str) else str(event_dict)
    return (line,), {"extra": {_RENDERED: True}}


def _choose(settings: LogSettings) -> tuple[str, int, list[str]]:
    """(format, level, problems) from the settings; bad values fall back to the defaults with a
    warning, because a typo in a logging variable must not stop the pipeline."""
    problems = []
    fmt = (settings.log_format or "").strip().lower()
    if fmt and fmt not in FORMATS:
        problems.append(f"LOG_FORMAT {settings.log_format!r} is not one of {', '.join(FORMATS)}; ignored")
        fmt = ""
    if not fmt:
        fmt = "console" if _stderr_is_terminal() else "json"
    level_name = (settings.log_level or "INFO").strip().upper()
    if level_name == "WARN":
        level_name = "WARNING"
    if level_name not in LEVELS:
        problems.append(f"LOG_LEVEL {settings.log_level!r} is not one of {', '.join(LEVELS)}; using INFO")
        level_name = "INFO"
    return fmt, logging.getLevelName(level_name), problems


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def configure(*, silent_unless_level_set: bool = False, settings: LogSettings | None = None) -> None:
    """Set up structlog and the "reddit_dagster" stdlib logger for this process (again, if called again).

    silent_unless_level_set: the command line prints its own one-line results; it logs events only
    when LOG_LEVEL is set explicitly.
    """
    global _configured
    settings = settings or LogSettings()
    fmt, level, problems = _choose(settings)
    if silent_unless_level_set and not settings.log_level:
        level = logging.CRITICAL + 1
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=_stderr_is_terminal(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
        structlog.processors.format_exc_info,
        redact_secrets,
        _event_first,
    ]
    with _lock:
        structlog.configure(
            processors=[
                structlog.stdlib.filter_by_level,
                structlog.contextvars.merge_contextvars,
                *shared,
                renderer,
                _hand_to_stdlib,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,  # configure() may run again (the CLI's settings win)
        )
        root = logging.getLogger(ROOT_LOGGER)
        for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
            root.removeHandler(handler)
        handler = _StderrHandler()
        handler.setFormatter(
            _LineFormatter(
                processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
                foreign_pre_chain=[structlog.contextvars.merge_contextvars, *shared],
            )
        )
        root.addHandler(handler)
        root.setLevel(level)
        # Our handler prints each line once; hosts that configure the root logger would print it again.
        root.propagate = False
        _configured = True
    for problem in problems:
        get_logger(__name__).warning("log_settings_ignored", problem=problem)


def ensure_configured() -> None:
    if not _configured:
        configure()


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """The structlog logger for a module of ours (name under "reddit_dagster")."""
    ensure_configured()
    return structlog.get_logger(name)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add these fields (e.g. run_id) to every event logged inside the block, in this context only."""
    with structlog.contextvars.bound_contextvars(**fields):
        yield


def elapsed_ms(started: float) -> int:
    """Milliseconds since `started`, a time.monotonic() reading."""
    return round((time.monotonic() - started) * 1000)
