"""Small actors for supervision tests: each does one thing a real actor may do (start, fail, quit)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from actors import messages as m
from actors.base import ChrActor


@dataclass(frozen=True)
class Quit:
    """Ask a `Worker` to exit normally (as a finished transient actor would)."""


@dataclass(frozen=True)
class WhoAreYou:
    pass


class Worker(ChrActor):
    """Answers Ping (from the base) and WhoAreYou with (name, pid, registry names); Quit exits normally."""

    def receiveMsg_Quit(self, msg: Quit, sender: Any) -> None:
        self.exit_normally()

    def receiveMsg_WhoAreYou(self, msg: WhoAreYou, sender: Any) -> None:
        self.send(sender, (self.name, os.getpid(), sorted(self.registry)))


class BrokenStart(ChrActor):
    """Refuses to start, like a listener whose port is taken."""

    def on_start(self, init: m.Init) -> None:
        raise OSError(98, "Address already in use (test)")
