"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chrnode.testing.anvil import DevChain, anvil_session, skip_or_fail_without_anvil
from chrnode.testing.node import NodeProcess


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    """Nodes a test starts (append before start()); what a failing test left running is killed."""
    started: list[NodeProcess] = []
    yield started
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="session")
def devchain() -> Iterator[DevChain]:
    """One anvil with the project's contracts for the whole run (SPEC 7); tests that change chain
    state use `chain`, which reverts to a snapshot afterwards. Fails in CI without `npm ci`."""
    skip_or_fail_without_anvil()
    with anvil_session() as started:
        yield started


@pytest.fixture
def chain(devchain: DevChain) -> Iterator[DevChain]:
    snap = devchain.snapshot()
    yield devchain
    devchain.revert(snap)
