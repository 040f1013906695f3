"""Fixtures of the reliability scenarios: fakes built with scenario options, and the worker zygote."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reddit_dagster.simulators.fake_amplitude import FakeAmplitude
from tests.reliability.harness import KEY, Workers


@pytest.fixture
def amplitude_factory() -> Iterator[Callable[..., FakeAmplitude]]:
    """Build and start FakeAmplitudes (our key, no per-user throttling unless asked); all stopped after."""
    started: list[FakeAmplitude] = []

    def make(**options: Any) -> FakeAmplitude:
        fake = FakeAmplitude(**({"api_keys": {KEY}, "eps_threshold": 0} | options))
        fake.start()
        started.append(fake)
        return fake

    try:
        yield make
    finally:
        for fake in started:
            fake.stop()


@pytest.fixture
def workers_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Workers]]:
    """Start worker zygotes (harness.Workers) for an environment; every one is closed after the test."""
    started: list[Workers] = []

    def make(env: dict[str, str]) -> Workers:
        out = tmp_path / f"workers-{len(started)}"
        out.mkdir()
        workers = Workers(env, out)
        started.append(workers)
        return workers

    try:
        yield make
    finally:
        for workers in started:
            workers.close()
