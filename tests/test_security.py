"""Security checks (issue 7): secrets stay out of every output, SQL is parameterized, and the
embedded database is reachable through a unix socket only.

Distinctive secret values are used for REDDIT_CLIENT_SECRET and AMPLITUDE_API_KEY (and for wrong
ones), the real `reddit-dagster` processes run against fakes that demand them, through their
success and failure paths with debug logging, and then every place a secret could leak is searched:
the processes' stdout and stderr, exception texts, every text/json column of every table, and every
element of the rendered dashboard. (Dagster's run config, event log and compute logs are searched
by tests/test_dagster_e2e.py::test_secrets_never_reach_dagster_storage_or_logs.)
"""

from __future__ import annotations

import ast
import os
import re
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import streamlit as st
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from streamlit.testing.v1 import AppTest

from reddit_dagster import db
from reddit_dagster.emit import emit_due
from reddit_dagster.ingest import poll_subreddits
from reddit_dagster.reddit import RedditClient, RedditError
from reddit_dagster.settings import Settings, get_settings
from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from reddit_dagster.simulators.fake_reddit import FakeReddit
from tests.reliability.harness import UA, V2, run_all

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
SUB = "healthcare"
CLIENT_ID = "security-client-id"
REDDIT_SECRET = "rs-SECRET-7f3a9c1e-d41d8cd9"
AMPLITUDE_KEY = "ak-SECRET-51d0e2b4-9e107d9d"
WRONG_REDDIT_SECRET = "rs-WRONG-0b6e2f55-secret"
WRONG_AMPLITUDE_KEY = "ak-WRONG-77c3d1a0-key"
SECRETS = (REDDIT_SECRET, AMPLITUDE_KEY, WRONG_REDDIT_SECRET, WRONG_AMPLITUDE_KEY)


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.fixture
def fakes(fake_reddit_factory: Callable[..., FakeReddit]) -> Iterator[tuple[FakeReddit, FakeAmplitude]]:
    reddit = fake_reddit_factory(client_id=CLIENT_ID, client_secret=REDDIT_SECRET, ratelimit_budget=100_000)
    amplitude = FakeAmplitude(api_keys={AMPLITUDE_KEY}, eps_threshold=0)
    amplitude.start()
    try:
        yield reddit, amplitude
    finally:
        amplitude.stop()


def secret_env(child_env: dict[str, str], reddit: FakeReddit, amplitude: FakeAmplitude) -> dict[str, str]:
    return child_env | {
        "SUBREDDITS": SUB,
        "REDDIT_API_URL": reddit.url,
        "REDDIT_WWW_URL": reddit.url,
        "REDDIT_USER_AGENT": UA,
        "REDDIT_CLIENT_ID": CLIENT_ID,
        "REDDIT_CLIENT_SECRET": REDDIT_SECRET,
        "AMPLITUDE_SERVER_URL": amplitude.url + V2,
        "AMPLITUDE_API_KEY": AMPLITUDE_KEY,
        "LOG_LEVEL": "DEBUG",  # the most output there is
    }


def table_texts(engine: Engine) -> Iterator[tuple[str, str, str]]:
    """(table, column, value as text) for every text-like or JSON column of every table."""
    text_types = ("text", "character varying", "character", "json", "jsonb", "bytea", "ARRAY")
    with engine.connect() as conn:
        columns = conn.execute(
            sa.text("SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND data_type = ANY(:types) ORDER BY table_name, column_name"),
            {"types": list(text_types)},
        ).all()
        tables: dict[str, sa.Table] = {}
        for table_name, column_name in columns:
            if table_name not in tables:
                tables[table_name] = sa.Table(table_name, sa.MetaData(), autoload_with=conn)
            table = tables[table_name]
            for value in conn.scalars(sa.select(sa.cast(table.c[column_name], sa.Text))):
                if value is not None:
                    yield table_name, column_name, value


# -- secrets ------------------------------------------------------------------------------------


def test_secrets_appear_in_no_output_table_or_dashboard_page(
    engine: Engine, fakes: tuple[FakeReddit, FakeAmplitude], child_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
):
    reddit, amplitude = fakes
    env = secret_env(child_env, reddit, amplitude)
    reddit.add_posts(SUB, 25)
    # Success and failure paths (the latter print and log the most): wrong credentials, a token
    # Reddit no longer accepts, a key Amplitude rejects. Pairs run at once to save time.
    poll, status = run_all(env, ("poll",), ("status",))
    wrong = env | {"REDDIT_CLIENT_SECRET": WRONG_REDDIT_SECRET, "AMPLITUDE_API_KEY": WRONG_AMPLITUDE_KEY}
    wrong_secret, wrong_key = run_all(wrong, ("poll",), ("emit",))
    reddit.add_posts(SUB, 5)
    reddit.fail_next("401_token", count=2, path_contains="/r/")
    amplitude.fail_next("invalid_key", count=1)
    revoked, rejected = run_all(env, ("poll",), ("emit",))
    [recovered] = run_all(env, ("poll",))
    emitted, status_json = run_all(env, ("emit",), ("status", "--json"))
    outputs = [poll, status, wrong_secret, wrong_key, revoked, rejected, recovered, emitted, status_json]
    assert poll.returncode == status.returncode == 0, poll.stderr + status.stderr
    assert wrong_secret.returncode == 1 and "RedditAuthError" in wrong_secret.stderr
    assert wrong_key.returncode == 1 and "rejected the API key" in wrong_key.stderr
    assert revoked.returncode == 1 and "RedditAuthError" in revoked.stderr
    assert rejected.returncode == 1 and "rejected the API key" in rejected.stderr
    assert recovered.returncode == emitted.returncode == status_json.returncode == 0, recovered.stderr + emitted.stderr
    assert len(amplitude.stored_events()) == 30  # both secrets were used, and accepted
    assert reddit.count_requests("/api/v1/access_token") >= 3

    for done in outputs:
        assert not leaks(done.stdout + done.stderr), f"`reddit-dagster {done.command}` printed a secret"
    assert sum(len(done.stderr.splitlines()) for done in outputs) > 50, "expected debug logs to search"

    found = [(table, column) for table, column, value in table_texts(engine) if leaks(value)]
    assert found == [], f"secrets stored in {found}"
    assert {table for table, _c, _v in table_texts(engine)} >= {"posts", "event_outbox", "poll_log", "incidents"}
    with engine.begin() as conn:  # the search would see a secret where one could land
        conn.execute(sa.text("INSERT INTO incidents (kind, key, message) VALUES ('control', 'x', :m)"),
                     {"m": f"leaked {AMPLITUDE_KEY}"})
    assert [(t, c) for t, c, value in table_texts(engine) if leaks(value)] == [("incidents", "message")]
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM incidents WHERE kind = 'control'"))

    # The dashboard, rendered with every secret in its environment, over the data of those runs.
    monkeypatch.setenv("DATABASE_URL", child_env["DATABASE_URL"])
    monkeypatch.setenv("SUBREDDITS", SUB)
    for name in ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "AMPLITUDE_API_KEY"):
        monkeypatch.setenv(name, env[name])
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        page = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    finally:
        get_settings.cache_clear()
        st.cache_data.clear()
        st.cache_resource.clear()
    assert not page.exception, [e.value for e in page.exception]
    elements = [str(node.proto) for node in page.main] + [str(node.proto) for node in page.sidebar]
    elements += [frame.value.to_csv() for frame in page.dataframe]
    newest_title = reddit.posts(SUB)[0]["title"]
    assert any(newest_title in text for text in elements), "the search must reach the tables' cells"
    assert not [text[:200] for text in elements if leaks(text)]


def exception_texts(exc: BaseException) -> str:
    """Everything an exception could show: its text, repr, traceback, and every linked exception."""
    texts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), "".join(traceback.format_exception(current))]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def test_secrets_appear_in_no_exception_or_result_text(engine: Engine, fakes: tuple[FakeReddit, FakeAmplitude]):
    reddit, amplitude = fakes
    reddit.add_posts(SUB, 3)
    client = RedditClient(api_url=reddit.url, www_url=reddit.url, user_agent=UA, client_id=CLIENT_ID,
                          client_secret=WRONG_REDDIT_SECRET, max_attempts=1)
    with pytest.raises(RedditError) as raised:
        client.new(SUB)
    assert "rejected the OAuth client credentials" in str(raised.value)
    assert not leaks(exception_texts(raised.value))

    settings = Settings(subreddits=[SUB], reddit_api_url=reddit.url, reddit_www_url=reddit.url,
                        reddit_user_agent=UA, reddit_client_id=CLIENT_ID, reddit_client_secret=WRONG_REDDIT_SECRET,
                        amplitude_api_key=WRONG_AMPLITUDE_KEY, amplitude_server_url=amplitude.url + V2)
    for text in (str(settings), repr(settings), settings.model_dump_json()):
        assert not leaks(text)
    [result] = poll_subreddits(engine, settings)
    assert result.error and "RedditAuthError" in result.error and not leaks(result.error + result.summary())

    good = settings.model_copy(update={"reddit_client_secret": SecretStr(REDDIT_SECRET)})
    [result] = poll_subreddits(engine, good)
    assert result.ok and len(result.new_ids) == 3
    emitted = emit_due(engine, settings, request_timeout_s=2, send_timeout_s=5)
    assert emitted.error and "rejected the API key" in emitted.error and not leaks(emitted.summary())

    # A database password given in DATABASE_URL stays out of database errors.
    unreachable = db.normalise_url("postgresql://postgres:" + WRONG_AMPLITUDE_KEY + "@127.0.0.1:1/nowhere")
    with pytest.raises(db.DatabaseError) as raised_db:
        db.upgrade(unreachable)
    assert "127.0.0.1:1/nowhere" in str(raised_db.value) and not leaks(exception_texts(raised_db.value))


# -- SQL ----------------------------------------------------------------------------------------

SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|TRUNCATE|WHERE|AND|OR|NOT|VACUUM|GRANT)\b")
# SQL assembled from pieces that are not bound parameters, each reviewed: (file, function) -> why safe.
REVIEWED_SQL_FORMATTING = {
    ("reddit_dagster/db.py", "ensure_database"): "database name quoted by the dialect's identifier preparer",
    ("reddit_dagster/db.py", "drop_database"): "database name quoted by the dialect's identifier preparer",
    ("reddit_dagster/emit.py", "claim_due"): "interpolates _near_window_clause: a float, formatted by repr",
    ("reddit_dagster/emit.py", "_near_window_clause"): "interpolates float(near_window_s) only",
    ("reddit_dagster/emit.py", "_count"): "callers pass constant WHERE clauses (and _near_window_clause)",
    ("reddit_dagster/emit.py", "near_window_count"): "a constant clause plus _near_window_clause",
}


def formatted_sql(path: Path) -> list[tuple[str, int, str]]:
    """(function, line, how) of every string with SQL words built by f-string, % or .format or +."""
    tree = ast.parse(path.read_text(), filename=str(path))
    function_of: dict[ast.AST, str] = {}
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):  # outer functions come first: inner ones overwrite
                function_of[node] = function.name
    found = []
    for node in ast.walk(tree):
        literal, how = None, ""
        if isinstance(node, ast.JoinedStr):
            literal = "".join(part.value for part in node.values if isinstance(part, ast.Constant))
            how = "f-string"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
            strings = [side.value for side in (node.left, node.right)
                       if isinstance(side, ast.Constant) and isinstance(side.value, str)]
            if len(strings) == 1:  # a literal combined with something computed
                literal, how = strings[0], "% formatting" if isinstance(node.op, ast.Mod) else "concatenation"
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"
              and isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str)):
            literal, how = node.func.value.value, ".format()"
        if literal and SQL_WORDS.search(literal):
            found.append((function_of.get(node, "<module>"), node.lineno, how))
    return found


def test_sql_is_parameterized_everywhere():
    sources = [*sorted((ROOT / "reddit_dagster").rglob("*.py")), ROOT / "streamlit_app.py"]
    unexpected, reviewed = [], set()
    for path in sources:
        relative = path.relative_to(ROOT).as_posix()
        for function, line, how in formatted_sql(path):
            if (relative, function) in REVIEWED_SQL_FORMATTING:
                reviewed.add((relative, function))
            else:
                unexpected.append(f"{relative}:{line} in {function}(): SQL built by {how}")
    assert unexpected == [], "SQL must use bound parameters (or be reviewed and listed here)"
    assert reviewed, "the scan found none of the reviewed cases: it no longer sees formatted SQL"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'select\s*=\s*\[[^\]]*"S608"', pyproject), "ruff's S608 (SQL injection) must stay enabled"


def test_the_scan_catches_formatted_sql(tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def bad(conn, name, table):\n"
        "    conn.execute(f\"SELECT * FROM posts WHERE id = '{name}'\")\n"
        "    conn.execute(\"DELETE FROM %s\" % table)\n"
        "    conn.execute(\"UPDATE posts SET title = '{}'\".format(name))\n"
        "    conn.execute(\"SELECT * FROM \" + table)\n"
        "    conn.execute(\"SELECT * FROM posts WHERE id = :id\", {\"id\": name})\n"
        "    print(f\"polled {name}\")\n"
    )
    assert [(function, line) for function, line, _how in formatted_sql(sample)] == [
        ("bad", 2), ("bad", 3), ("bad", 4), ("bad", 5)]


# -- the embedded database ----------------------------------------------------------------------


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="DATABASE_URL names an external server")
def test_embedded_database_listens_on_a_unix_socket_only(database_url):
    url = db.app_url()
    assert url.host is None and url.port is None, url.render_as_string()
    assert str(url.query.get("host", "")).startswith("/"), "the URL must name a socket directory"
    # The session's test database lives on that same server (the default database may not exist
    # yet on a fresh clone: `make test` never creates it).
    assert database_url.query == url.query
    engine = db.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW listen_addresses")).scalar_one() == ""
            assert conn.execute(sa.text("SELECT inet_server_addr()")).scalar_one() is None  # a socket
    finally:
        engine.dispose()
