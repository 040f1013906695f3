"""Alembic environment: runs on the connection handed over by reddit_dagster.db.upgrade."""

from alembic import context

from reddit_dagster.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `reddit-dagster db upgrade` (reddit_dagster.db.upgrade)")

context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
