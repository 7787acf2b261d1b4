"""The daemon's heartbeat to the root supervisor (issue 9: a hung root is seen and replaced).

A root that is alive but answers nothing (a handler stuck in a loop, a deadlock) holds the whole
tree hostage: no restart, no registry, no clean stop. `Heartbeat` is the rule (pure, the caller
passes the clock); `RootPinger` is the adapter, a thread with a Thespian handle of its own that
records each `Pong`. The daemon's loop asks `overdue()` and treats a yes as the root's death.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from chrnode.actorsys import close_handle

log = logging.getLogger("chrnode.daemon")


@dataclass
class Heartbeat:
    """The root supervisor answers a ping every `every` seconds; no answer for `timeout` seconds
    means it is hung: a death like any other, though no process has ended. Pure: the caller
    passes the clock (the daemon's pinger thread records answers, its loop asks `overdue`)."""

    every: float = 2.0
    timeout: float = 15.0
    last_answer: float = 0.0

    def start(self, now: float) -> None:
        self.last_answer = now

    def answered(self, now: float) -> None:
        self.last_answer = max(self.last_answer, now)

    def overdue(self, now: float) -> bool:
        return now - self.last_answer > self.timeout


class RootPinger:
    """Asks the root supervisor for a Pong every `heartbeat.every` seconds, from a thread and a
    Thespian handle of its own: an external `tell` waits until the receiver acknowledges (up to
    60 s), so a stopped or hung root would otherwise freeze the daemon's loop. The thread only
    records answers; the loop decides (`Heartbeat.overdue`)."""

    def __init__(self, admin_port: int, root: Any, heartbeat: Heartbeat) -> None:
        self.admin_port = admin_port
        self.root = root
        self.heartbeat = heartbeat
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chr-node-root-pinger", daemon=True)
        self._asys: Any = None

    def start(self) -> RootPinger:
        from thespian.actors import ActorSystem

        # Made here, in the daemon's thread: a handle whose admin is gone starts a new admin,
        # which must never be forked from a helper thread. (If the admin died just now, that
        # stray admin holds the port and the rebuild stops with a clear line and status 1.)
        # transientUnique: a handle of its own, not the daemon's singleton.
        self._asys = ActorSystem("multiprocTCPBase", {"Admin Port": self.admin_port}, transientUnique=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(1.0)  # a ping stuck on a hung root is abandoned (daemon thread)

    def _run(self) -> None:
        from actors import messages as m

        asys = self._asys
        try:
            while not self._stopping.wait(self.heartbeat.every):
                try:
                    reply = asys.ask(self.root, m.Ping(), timedelta(seconds=self.heartbeat.every))
                except Exception:  # a root that cannot be reached is what the heartbeat measures
                    continue
                if isinstance(reply, m.Pong):
                    self.heartbeat.answered(time.monotonic())
        finally:
            close_handle(asys)
