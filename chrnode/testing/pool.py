"""A small pool actor for tests of the thread bridge (actors/chain_pool.py, actors/bridge.py):
its work runs on pool threads, which report back to the actor through ThreadBridge.post(own name)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from actors import messages as m
from actors.chain_pool import PoolActor

__all__ = ["Note", "Noted", "PoolState", "PoolStateReply", "Square", "Squarer"]


@dataclass(frozen=True)
class Square:
    """Answered with ChainAnswer(tag, True, n * n), computed on a pool thread."""

    n: int
    tag: Any = None


@dataclass(frozen=True)
class Note:
    """A pool thread posts `Noted(text, thread name)` to the actor's own name; the actor keeps it."""

    text: str


@dataclass(frozen=True)
class Noted:
    text: str
    thread: str


@dataclass(frozen=True)
class PoolState:
    """Answered with PoolStateReply: requests still counted as queued, notes kept and which
    thread handled each (the actor's own, never a pool thread)."""


@dataclass(frozen=True)
class PoolStateReply:
    queued: int
    notes: tuple[tuple[str, str, str], ...]  # (text, posting thread, handling thread)


class Squarer(PoolActor):
    def on_start(self, init: m.Init) -> None:
        self._start_pool(2)
        self.notes: list[tuple[str, str, str]] = []

    def receiveMsg_Square(self, msg: Square, sender: Any) -> None:
        self.run(sender, msg.tag, lambda: msg.n * msg.n)

    def receiveMsg_Note(self, msg: Note, sender: Any) -> None:
        self.pool.submit(lambda: self.post(self.name, Noted(msg.text, threading.current_thread().name)))

    def receiveMsg_Noted(self, msg: Noted, sender: Any) -> None:
        self.notes.append((msg.text, msg.thread, threading.current_thread().name))

    def receiveMsg_PoolState(self, msg: PoolState, sender: Any) -> None:
        self.send(sender, PoolStateReply(self.queued, tuple(self.notes)))
