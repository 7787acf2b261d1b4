"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chrnode.testing.node import NodeProcess


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    """Nodes a test starts (append before start()); what a failing test left running is killed."""
    started: list[NodeProcess] = []
    yield started
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()
