"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from chrnode.testing.anvil import DevChain, anvil_session, skip_or_fail_without_anvil
from chrnode.testing.node import NodeProcess

# Hypothesis fails an example that takes over 200 ms (its default deadline), and calls a test
# flaky when the replay is fast: a timed test, which this suite does not have (speed targets
# are benchmarks, bench/). On the 2-core CI machine, or one shared by several test runs, a pure
# example can take longer than that, so the "ci" profile has no deadline and is the one loaded
# unless HYPOTHESIS_PROFILE names another ("dev": Hypothesis' own defaults, deadline included,
# to spot a slow strategy on an idle machine). A test's own @settings still wins over it.
settings.register_profile("ci", deadline=None)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
