"""reddit_dagster: every new Reddit post recorded once in PostgreSQL, sent to Amplitude exactly once."""

__version__ = "0.1.0"
