"""A process told to exit is watched until it has (found by tools/chaos: a sub-supervisor told to
exit by a rest_for_one restart stayed up, forgotten, beside its replacement). Its supervisor
SIGKILLs it past its shutdown timeout and says so."""

from __future__ import annotations

import time

import psutil
import pytest

from actors import messages as m
from chrnode.testing.tree import running_tree
from tests.test_supervision import gone, kill, pid_of, running, spec

pytestmark = pytest.mark.slow

WORKER = "chrnode.testing.actors:Worker"
LINGERING = "chrnode.testing.actors:Lingering"


def test_a_child_that_says_it_exits_but_stays_up_is_killed_after_its_shutdown_timeout() -> None:
    children = (m.ChildSpec("A", WORKER), m.ChildSpec("L", LINGERING, shutdown=1.0))
    with running_tree(spec(*children)) as tree:
        tree.wait_for(running(["A", "L"]))
        lingering = pid_of(tree, "L")
        kill(pid_of(tree, "A"))  # rest_for_one: L is asked to stop, says Exiting, and stays up
        told = time.monotonic()
        tree.wait_for(lambda s: running(["A", "L"])(s) and pid_of(s, "L") != lingering)
        assert gone(lingering, timeout=10.0), "the old L outlived its replacement"
        took = time.monotonic() - told
        assert took < 1.0 + 3.0, f"killed {took:.1f} s after it was told to exit (shutdown 1 s)"
        # and only that one: the new L and A are up
        assert all(psutil.Process(pid_of(tree, n)).is_running() for n in ("A", "L"))
