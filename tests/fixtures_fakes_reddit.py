"""Pytest fixtures for the fake Reddit server (registered by tests/conftest.py)."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reddit_dagster.simulators.fake_reddit import FakeReddit


@pytest.fixture
def fake_reddit() -> Iterator[FakeReddit]:
    """A started FakeReddit without OAuth (public endpoints), empty, default limits."""
    fake = FakeReddit()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_reddit_factory() -> Iterator[Callable[..., FakeReddit]]:
    """Build and start FakeReddits with any constructor options; all are stopped afterwards."""
    started: list[FakeReddit] = []

    def make(**options: Any) -> FakeReddit:
        fake = FakeReddit(**options)
        fake.start()
        started.append(fake)
        return fake

    try:
        yield make
    finally:
        for fake in started:
            fake.stop()
