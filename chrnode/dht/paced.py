"""The join's refreshes, a few at a time (Kademlia 2.3's join, paced). Pure: no clock, no I/O.

A join refreshes every bucket past the nearest neighbour's (`DhtNode.refresh_beyond_nearest`),
and each refresh is a lookup that asks about k nodes, on a new node a new peer link (TLS
handshake and hello) for most of them. Started all at once, a join's 4-8 refreshes (up to 156
on a lone node) put k dials per bucket in flight together; with 200 nodes joining, hellos missed
their deadline. This queue holds the refreshes' lookup ids and targets, nearest bucket first,
and lets at most `limit` of them run: the next one starts when one ends. A later refresh also
starts from a fuller table, so it needs fewer hops.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PacedRefreshes"]


class PacedRefreshes:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"at least one refresh must be allowed in flight, not {limit}")
        self.limit = limit
        self._waiting: deque[tuple[int, bytes]] = deque()  # (lookup id, target), in order
        self._running: set[int] = set()

    def add(self, lookup_id: int, target: bytes) -> None:
        """Queue a refresh lookup; `next` gives it out when a slot is free."""
        self._waiting.append((lookup_id, target))

    def next(self) -> tuple[int, bytes] | None:
        """The next refresh to start now (it counts as running from here), or None: all
        slots are taken or nothing waits."""
        if not self._waiting or len(self._running) >= self.limit:
            return None
        lookup_id, target = self._waiting.popleft()
        self._running.add(lookup_id)
        return lookup_id, target

    def ended(self, lookup_id: int) -> bool:
        """A lookup ended; True if it was one of these refreshes (its slot is free again)."""
        if lookup_id in self._running:
            self._running.remove(lookup_id)
            return True
        return False

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)
