"""The signed objects this node holds for the DHT (SPEC 6): for one key the highest `seq` wins,
an older one is `stale`, an expired one is never kept.

The store sees a `Value`: the fields of a signed object that its rules need (key, seq,
expires) and the object itself, opaque. Checking the signature and that the key matches the
kind is the signed-object codec's work, done before a `Value` is made; this module keeps the
rules that hold whatever the kind.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from chrnode.dht.ids import check_id

STORED = "stored"
STALE = "stale"  # SPEC 4 STORE error code
EXPIRED = "expired"  # SPEC 4 STORE error code
FULL = "rate_limited"  # the store is at capacity: the sender should try later (SPEC 4 code)


@dataclass(frozen=True)
class Value:
    """A signed object as the DHT handles it; `obj` is passed on untouched."""

    key: bytes
    seq: int
    expires: float  # unix seconds (SPEC 6 `expires`)
    obj: object = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_id(self.key, "a value's key")
        if self.seq < 0:
            raise ValueError(f"a value's seq must not be negative ({self.seq})")


@dataclass
class _Held:
    value: Value
    stored_at: float  # when it last arrived (a STORE or our own publish): republish is due after


class ValueStore:
    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._held: dict[bytes, _Held] = {}
        self._expiries: list[tuple[float, bytes]] = []  # lazy heap: entries may be outdated

    def put(self, value: Value, now: float) -> str:
        """Keep `value` if it is the newest for its key: STORED, STALE, EXPIRED or FULL.

        An equal seq refreshes the held object's arrival time (a republish) and keeps the one
        held, so a signer that signs two objects with one seq cannot swap them in.
        """
        if value.expires <= now:
            return EXPIRED
        held = self._held.get(value.key)
        if held is not None:
            if value.seq < held.value.seq:
                return STALE
            if value.seq == held.value.seq:
                held.stored_at = now
                return STORED
        elif len(self._held) >= self.capacity:
            return FULL
        self._held[value.key] = _Held(value, now)
        heapq.heappush(self._expiries, (value.expires, value.key))
        return STORED

    def get(self, key: bytes, now: float) -> Value | None:
        held = self._held.get(key)
        if held is None or held.value.expires <= now:
            return None
        return held.value

    def expire(self, now: float) -> list[Value]:
        """Drop every value whose `expires` has passed; returns them."""
        dropped: list[Value] = []
        while self._expiries and self._expiries[0][0] <= now:
            expires, key = heapq.heappop(self._expiries)
            held = self._held.get(key)
            if held is not None and held.value.expires == expires:
                del self._held[key]
                dropped.append(held.value)
        return dropped

    def due_for_republish(self, now: float, interval: float) -> list[Value]:
        """Values that arrived `interval` or more ago; each is marked as republished at `now`.

        Kademlia section 2.5: a node that received the value within the interval skips its
        own republish, so one republish per interval reaches the k holders, not k squared.
        """
        due: list[Value] = []
        for held in self._held.values():
            if now - held.stored_at >= interval and held.value.expires > now:
                held.stored_at = now
                due.append(held.value)
        return due

    def next_expiry(self) -> float | None:
        return self._expiries[0][0] if self._expiries else None

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        return key in self._held

    def drop(self, key: bytes) -> Value | None:
        """Forget the value held for `key` (its signer disowned it: the device left that node)."""
        held = self._held.pop(key, None)
        return None if held is None else held.value
