"""Run a supervision tree on a real multiprocTCPBase actor system, for tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from actors import messages as m
from actors.supervisor import Supervisor
from chrnode.actorsys import shutdown_system, start_system


def tree_config(**overrides: Any) -> SimpleNamespace:
    base = {"log_level": "warning", "max_restarts": 5, "restart_window": 5.0, "heartbeat_timeout": 10.0}
    base.update(overrides)
    return SimpleNamespace(**base)


class TreeHandle:
    def __init__(self, asys: Any, root: Any) -> None:
        self.asys = asys
        self.root = root

    def snapshot(self, timeout: float = 10.0) -> m.TreeSnapshot:
        reply = self.asys.ask(self.root, m.GetTree(), timeout)
        for _ in range(10):  # an earlier message may still be on its way to us: skip it
            if isinstance(reply, m.TreeSnapshot):
                return reply
            reply = self.asys.listen(timeout)
        raise AssertionError(f"root did not answer GetTree: {reply!r}")

    def actor(self, name: str) -> dict[str, Any]:
        for row in self.snapshot().actors:
            if row["name"] == name:
                return row
        raise KeyError(name)

    def wait_for(self, predicate: Callable[[m.TreeSnapshot], bool], timeout: float = 20.0) -> m.TreeSnapshot:
        deadline = time.monotonic() + timeout
        snap = self.snapshot()
        while not predicate(snap):
            if time.monotonic() > deadline:
                raise AssertionError(f"tree did not reach the expected state in {timeout} s: {snap.actors}")
            time.sleep(0.02)
            snap = self.snapshot()
        return snap

    def ask(self, name: str, message: Any, timeout: float = 10.0) -> Any:
        address = self.snapshot().registry.get(name)
        assert address is not None, f"{name} is not registered"
        return self.asys.ask(address, message, timeout)


@contextmanager
def running_tree(spec: m.ChildSpec, config: Any = None, timeout: float = 60.0) -> Iterator[TreeHandle]:
    """Start `spec` under a fresh actor system; always shuts the system down."""
    asys = start_system(0, level="warning")  # a free admin port, checked to be ours
    try:
        root = asys.createActor(Supervisor)
        reply = asys.ask(root, m.StartTree(spec, config or tree_config(), 0), timeout)
        if not isinstance(reply, m.TreeReady):
            raise AssertionError(f"tree did not start: {reply!r}")
        yield TreeHandle(asys, root)
    finally:
        shutdown_system(asys)
