"""A time budget per loop iteration for the peer links' requests and answers (issue 10: the
network loop's lag).

asyncio runs every callback that is ready in one iteration before it looks at its timers again.
A burst of DHT lookups brings dozens of links' answers in one poll, each a msgpack decode and a
routing step (half a millisecond with its node records); a STORE flood brings hundreds of
requests in one read, each with a signature to check. Handled where they arrive, they held the
network loop for 40-80 ms (bench/bench_loop_lag.py), and every device and link with it.

:class:`LoopBudget` takes such work in order and runs at most ``budget`` seconds of it per
iteration; the rest waits for the next iteration, after the loop has polled its sockets and run
its timers again. The work itself is the same; only its slices are bounded.

    work = LoopBudget(loop)          # one per network (chrnode.net.peers.PeerNetwork)
    work.submit(handle, frame)       # runs soon, in submission order
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_BUDGET", "LoopBudget"]

_log = logging.getLogger("chrnode.peer")

DEFAULT_BUDGET = 0.002  # seconds of queued work per loop iteration (the lag target is 5 ms p99)


class LoopBudget:
    """Callbacks in submission order, at most ``budget`` seconds of them per loop iteration."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        budget: float = DEFAULT_BUDGET,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if budget <= 0:
            raise ValueError(f"the budget must be positive, got {budget}")
        self.loop = loop
        self.budget = budget
        self.clock = clock
        self._queue: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = collections.deque()
        self._scheduled = False
        self.slices = 0  # iterations that ran queued work
        self.deferred = 0  # of those, how many left work for the next iteration

    def __len__(self) -> int:
        return len(self._queue)

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._queue.append((fn, args))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        self.slices += 1
        queue, clock = self._queue, self.clock
        deadline = clock() + self.budget
        while queue:
            fn, args = queue.popleft()
            try:
                fn(*args)
            except Exception:
                _log.exception("queued peer work failed")
            if clock() >= deadline:
                break
        if queue:
            self.deferred += 1
            self._scheduled = True
            self.loop.call_soon(self._run)
