"""When to join the network again (SPEC 6, SPEC 11 `fleet_nodes`): pure, time an argument.

A node joins through its fleet nodes at start. If its routing table later empties (every
contact failed: its own network was down, or the nodes it knew all left), it has nobody to ask
and no way back but the fleet, so it joins again, and keeps trying with exponential backoff
(``initial`` doubling to ``maximum``, with jitter from the caller's RNG so that the nodes of a
partition that heals do not all rejoin in step) until a join leaves it with contacts.

    emptied(now)        the table has just emptied: arm the first attempt
    due(now)            whether an attempt should start now
    started(lookup_id)  a join lookup is running (none is armed while one runs)
    finished(lookup_id, contacts, now) -> "rejoined" | "retry" | "": that join is over

A join that leaves the table empty (the fleet unreachable, or it knew nobody else) arms the next
attempt; one that fills it resets the backoff.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

__all__ = ["REJOINED", "RETRY", "Rejoin"]

REJOINED, RETRY = "rejoined", "retry"


@dataclass
class Rejoin:
    initial: float = 2.0
    maximum: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0  # failed joins in a row; the next delay doubles with each
    due_at: float = math.inf
    running: int | None = None  # the join lookup in flight

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"rejoin backoff needs 0 < initial <= maximum: {self.initial}, {self.maximum}")

    def emptied(self, now: float) -> None:
        if self.running is None and self.due_at == math.inf:
            self.due_at = now + self.delay()

    def due(self, now: float) -> bool:
        return self.running is None and now >= self.due_at

    def started(self, lookup_id: int) -> None:
        self.running = lookup_id
        self.due_at = math.inf

    def finished(self, lookup_id: int, contacts: int, now: float) -> str:
        if lookup_id != self.running:
            return ""
        self.running = None
        if contacts:
            self.attempts = 0
            return REJOINED
        self.attempts = min(self.attempts + 1, 32)
        self.due_at = now + self.delay()
        return RETRY

    def delay(self) -> float:
        """The wait before the next attempt: ``initial * 2**attempts`` up to ``maximum``,
        drawn from its upper half."""
        base: float = min(self.maximum, self.initial * 2.0**self.attempts)
        return base * (0.5 + self.rng.random() / 2)
