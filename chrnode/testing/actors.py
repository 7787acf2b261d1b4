"""Small actors for supervision tests: each does one thing a real actor may do (start, fail, quit)."""

from __future__ import annotations

import os
import time
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


@dataclass(frozen=True)
class Remember:
    """Keep `value` in the actor's memory (to see that a restarted actor starts fresh)."""

    value: Any


@dataclass(frozen=True)
class Recall:
    """Answered with what was remembered, or None."""


@dataclass(frozen=True)
class Boom:
    """Makes the handler raise, like a bug in an actor."""


class Worker(ChrActor):
    """Answers Ping (from the base) and WhoAreYou with (name, pid, registry names); Quit exits normally."""

    def receiveMsg_Quit(self, msg: Quit, sender: Any) -> None:
        self.exit_normally()

    def receiveMsg_WhoAreYou(self, msg: WhoAreYou, sender: Any) -> None:
        self.send(sender, (self.name, os.getpid(), sorted(self.registry)))

    def receiveMsg_Remember(self, msg: Remember, sender: Any) -> None:
        self.memory = msg.value
        self.send(sender, ("remembered", os.getpid()))

    def receiveMsg_Recall(self, msg: Recall, sender: Any) -> None:
        self.send(sender, ("recalled", getattr(self, "memory", None), os.getpid()))

    def receiveMsg_Boom(self, msg: Boom, sender: Any) -> None:
        raise RuntimeError("boom (a bug, on purpose)")


class Collector(Worker):
    """A Worker that keeps every PubSub payload it gets, in order (Recall answers with them)."""

    def on_published(self, topic: str, key: str, payload: Any) -> None:
        self.memory = [*(getattr(self, "memory", None) or []), (topic, key, payload)]


class SlowStart(Worker):
    """A Worker whose start takes `SECONDS`, so that it can be killed before it says Started."""

    SECONDS = 1.5

    def on_start(self, init: m.Init) -> None:
        time.sleep(self.SECONDS)


class BrokenStart(ChrActor):
    """Refuses to start, like a listener whose port is taken."""

    def on_start(self, init: m.Init) -> None:
        raise OSError(98, "Address already in use (test)")


class Lingering(Worker):
    """Says it exits when asked (Exiting, from the base) but its process stays up: a thread that
    is not a daemon keeps it alive, as Thespian keeps an exiting actor up while it waits for a
    child's exit notice that never comes."""

    def on_stop(self) -> None:
        import threading

        threading.Thread(target=threading.Event().wait, name="lingering", daemon=False).start()
