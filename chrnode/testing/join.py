"""Join a running node's actor system from a test or tool on the same machine (loopback only)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from actors import messages as m
from actors.tree import ROOT
from chrnode.actorsys import loopback_only


class Joined:
    def __init__(self, asys: Any, root: Any) -> None:
        self.asys = asys
        self.root = root

    def address(self, name: str, timeout: float = 10.0) -> Any:
        reply = self.asys.ask(self.root, m.WhereIs(name), timedelta(seconds=timeout))
        assert isinstance(reply, m.WhereIsReply) and reply.address is not None, (
            f"{name} not registered: {reply!r}"
        )
        return reply.address

    def ask(self, name: str, message: Any, timeout: float = 30.0) -> Any:
        return self.asys.ask(self.address(name), message, timedelta(seconds=timeout))


@contextmanager
def joined(admin_port: int) -> Iterator[Joined]:
    """The daemon created the root under a global name, so this finds it (and creates nothing)."""
    loopback_only()
    from thespian.actors import ActorSystem

    # transientUnique: do not become this process's singleton ActorSystem (a later start_system()
    # in the same process would otherwise reuse this handle to another node's admin).
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": admin_port}, transientUnique=True)
    yield Joined(asys, asys.createActor("actors.supervisor.Supervisor", globalName=ROOT))
