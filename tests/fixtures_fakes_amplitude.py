"""Pytest fixture for the fake Amplitude server (register via conftest or import into a test module)."""

from collections.abc import Iterator

import pytest

from reddit_dagster.simulators.fake_amplitude import FakeAmplitude


@pytest.fixture
def fake_amplitude() -> Iterator[FakeAmplitude]:
    """A started FakeAmplitude with default limits; accepts the key "test-amplitude-key"."""
    fake = FakeAmplitude()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
