"""The `reddit-dagster` console script: the same functions the Dagster assets call.

Every command exits 0 on success; on failure it prints one line naming the cause and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from reddit_dagster import db, logs
from reddit_dagster.settings import Settings, get_settings


class CommandError(RuntimeError):
    """A failure whose message is already the one line the user should see."""


def _alert(engine: Engine, settings: Settings) -> None:
    """Post any new incident to ALERT_WEBHOOK_URL; never fails the command (alerts.py)."""
    from reddit_dagster import alerts

    alerts.check_and_notify(engine, alerts.webhook_url_of(settings))


def cmd_poll(args: argparse.Namespace) -> int:
    from reddit_dagster.ingest import poll_subreddits

    settings = get_settings()
    url = db.app_url(settings)
    db.upgrade(url)
    engine = db.create_engine(url)
    results = poll_subreddits(engine, settings)
    for result in results:
        print(result.summary(), file=sys.stdout if result.ok else sys.stderr)
    _alert(engine, settings)
    return 0 if all(result.ok for result in results) else 1


def cmd_reconcile(args: argparse.Namespace) -> int:
    from reddit_dagster.ingest import reconcile

    settings = get_settings()
    url = db.app_url(settings)
    db.upgrade(url)
    engine = db.create_engine(url)
    subreddit = args.subreddit.strip().removeprefix("/").removeprefix("r/")
    result = reconcile(engine, settings, subreddit)
    print(result.summary(), file=sys.stdout if result.ok else sys.stderr)
    _alert(engine, settings)
    return 0 if result.ok else 1


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from reddit_dagster.emit import dead_letters

    url = db.app_url()
    db.upgrade(url)
    letters = dead_letters(db.create_engine(url))
    if args.json:
        rows = [letter.__dict__ | {"created_at": letter.created_at.isoformat()} for letter in letters]
        print(json.dumps(rows, indent=2))
        return 0
    if not letters:
        print("no dead letters")
        return 0
    for letter in letters:
        status = f"HTTP {letter.http_status}" if letter.http_status is not None else "not sent"
        where = f"r/{letter.subreddit}" if letter.subreddit else "?"
        print(f"{letter.insert_id}  post {letter.post_id} ({where})  {letter.attempts} attempt(s)  {status}  "
              f"{' '.join(letter.reason.split())}")
    print(f"{len(letters)} dead letter(s); after a fix: reddit-dagster retry-dead --id INSERT_ID ... | --all")
    return 0


def cmd_retry_dead(args: argparse.Namespace) -> int:
    from reddit_dagster.emit import NotDeadLetters, near_window_count, requeue_dead

    url = db.app_url()
    db.upgrade(url)
    engine = db.create_engine(url)
    try:
        requeued = requeue_dead(engine, None if args.all else args.ids)
    except NotDeadLetters as exc:
        raise CommandError(str(exc)) from None
    if not requeued:
        print("no dead letters to retry")
        return 0
    print(f"{len(requeued)} dead letter(s) back to pending with their insert_ids; the next emit sends them")
    near = near_window_count(engine)
    if near:
        print(f"note: {near} pending event(s) were first attempted nearly 7 days ago and are held back; "
              "send them with `reddit-dagster emit --allow-near-window`")
    return 0


def cmd_emit(args: argparse.Namespace) -> int:
    from reddit_dagster.emit import emit_due

    settings = get_settings()
    url = db.app_url(settings)
    db.upgrade(url)
    engine = db.create_engine(url)
    result = emit_due(engine, settings, allow_near_window=args.allow_near_window)
    print(result.summary(), file=sys.stdout if result.ok else sys.stderr)
    _alert(engine, settings)
    return 0 if result.ok else 1


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    url, storage = db.prepare()
    print(f"database ready at {db.safe_url(url)} (schema up to date); dagster storage {storage.database}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from reddit_dagster.emit import near_window_count
    from reddit_dagster.store import pipeline_status

    url = db.app_url()
    db.upgrade(url)
    engine = db.create_engine(url)
    status = pipeline_status(engine)
    status["near_dedupe_window"] = near_window_count(engine)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        for key in ("posts", "pending", "sent", "dead", "oldest_pending_age_s", "near_dedupe_window"):
            print(f"{key:>22}: {status[key]}")
        print(f"{'last_poll':>22}: {json.dumps(status['last_poll'], default=str)}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from reddit_dagster.launcher import stack_environment

    for key, value in stack_environment(*db.prepare()).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from reddit_dagster.launcher import run_stack

    return run_stack(demo=args.demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reddit-dagster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    dbp = sub.add_parser("db", help="database commands").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("upgrade", help="create the databases and apply migrations").set_defaults(func=cmd_db_upgrade)

    status = sub.add_parser("status", help="counts: posts, pending, sent, dead, last poll")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    sub.add_parser("env", help="print the environment `dagster` commands need (eval it)").set_defaults(
        func=cmd_env
    )
    run = sub.add_parser("run", help="start PostgreSQL, dagster dev (:3000) and the dashboard (:8501)")
    run.add_argument("--demo", action="store_true", help="against the built-in Reddit/Amplitude simulators")
    run.set_defaults(func=cmd_run)

    sub.add_parser("poll", help="walk /new, record new posts and outbox rows, snapshot /hot").set_defaults(
        func=cmd_poll
    )
    emit = sub.add_parser("emit", help="send every due outbox event to Amplitude, then exit")
    emit.add_argument(
        "--allow-near-window",
        action="store_true",
        help="also resend events first attempted more than 6 days ago (Amplitude dedupes for 7 days only)",
    )
    emit.set_defaults(func=cmd_emit)

    reconcile = sub.add_parser("reconcile", help="deep walk of the reachable /new listing; records what is missing")
    reconcile.add_argument("--subreddit", required=True, help="the subreddit to walk (need not be in SUBREDDITS)")
    reconcile.set_defaults(func=cmd_reconcile)

    dead = sub.add_parser("dead-letters", help="list the events Amplitude rejected for good, with the reasons")
    dead.add_argument("--json", action="store_true", help="machine-readable output")
    dead.set_defaults(func=cmd_dead_letters)

    retry = sub.add_parser("retry-dead", help="put dead letters back to pending after a fix (same insert_id)")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", nargs="+", action="extend", metavar="INSERT_ID",
                       help="insert_ids as `dead-letters` lists them")
    which.add_argument("--all", action="store_true", help="every dead letter")
    retry.set_defaults(func=cmd_retry_dead)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # The commands print their own one-line results; structured events only with LOG_LEVEL set.
        logs.configure(silent_unless_level_set=True)
        get_settings()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CommandError, db.DatabaseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line, never a traceback, never a secret (messages are ours)
        print(f"error: {type(exc).__name__}: {db.first_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
