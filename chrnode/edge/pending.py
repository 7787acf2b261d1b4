"""Requests a connection sent and awaits answers to, by id: one table for a device session
(chrnode.edge.session) and a peer link (chrnode.peer.link).

Each request gets the next id and a timer; its callback is called exactly once, with the answer,
or with None when the timer fires or the connection closes. A callback that raises is logged
and does not disturb the connection (``on_error``). The loop only schedules the timers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Pending"]

A = TypeVar("A")
Callback = Callable[[A | None], None]


class Pending(Generic[A]):
    """Pending requests by id: ``add`` on send, ``answer`` on an answer, ``close`` on close."""

    __slots__ = ("_entries", "_loop", "_next_id", "_on_error")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_error: Callable[[], None], *, last_id: int = 0
    ) -> None:
        self._loop = loop
        self._on_error = on_error  # called inside the except of a callback that raised
        self._next_id = last_id
        self._entries: dict[int, tuple[Callback[A], asyncio.TimerHandle]] = {}

    def next_id(self) -> int:
        """A fresh id for a message that is not tracked here (a probe answered elsewhere)."""
        self._next_id += 1
        return self._next_id

    def add(self, on_answer: Callback[A], timeout: float) -> int:
        """Track a request about to be sent: its id; ``on_answer(None)`` after ``timeout`` s."""
        request_id = self.next_id()
        timer = self._loop.call_later(timeout, self._timed_out, request_id)
        self._entries[request_id] = (on_answer, timer)
        return request_id

    def waits(self, request_id: int | None) -> bool:
        """A request with this id waits for its answer."""
        return request_id is not None and request_id in self._entries

    def answer(self, request_id: int | None, answer: A) -> bool:
        """The answer to ``request_id`` arrived: its callback gets it. False if none waits for it
        (an unknown id, one that timed out, or no id at all)."""
        entry = self._entries.pop(request_id, None) if request_id is not None else None
        if entry is None:
            return False
        callback, timer = entry
        timer.cancel()
        self.call(callback, answer)
        return True

    def close(self) -> None:
        """The connection closed: every request still waiting gets None."""
        entries, self._entries = self._entries, {}
        for callback, timer in entries.values():
            timer.cancel()
            self.call(callback, None)

    def call(self, callback: Callback[A], answer: A | None) -> None:
        try:
            callback(answer)
        except Exception:
            self._on_error()

    def __len__(self) -> int:
        return len(self._entries)

    def _timed_out(self, request_id: int) -> None:
        entry = self._entries.pop(request_id, None)
        if entry is not None:
            self.call(entry[0], None)
