"""What the device port server asks of the rest of the node (implemented by the listener actor).

EdgeServer never touches storage, the chain or the DHT itself: it calls these coroutines, which the
actor answers (through its thread bridge) or which :class:`DefaultHooks` answers in memory for tests
and tools. Every hook may be slow; the server never holds a byte stream waiting on one except the
request that needs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from chrnode.ticket import DEFAULT_EPOCH_LENGTH, Ticket, epoch_of

__all__ = ["DefaultHooks", "DevicePresence", "EdgeHooks", "NameRecord"]


@dataclass(frozen=True, slots=True)
class NameRecord:
    """A resolved BNS name (SPEC 7): its device addresses (first one is used for portopen)."""

    devices: tuple[bytes, ...]
    owner: bytes
    namespace: str


class DevicePresence(Protocol):
    """Who is served here, for the network (the node's `location` objects, SPEC 6). Called on the
    edge loop and must not block: the network side publishes in tasks of its own."""

    def device_hello(self, device: bytes, binding: bytes, device_sig: bytes) -> None:
        """``device`` proved its hello on this session (tls-unique ``binding``)."""
        ...

    def device_ticket(self, device: bytes, ticket: Ticket) -> None:
        """A valid ticket of ``device`` naming this node was accepted."""
        ...

    def device_left(self, device: bytes) -> None:
        """The device's session here ended (not replaced by a newer one of the same device)."""
        ...


class EdgeHooks(Protocol):
    """The node services the device port needs. All coroutines; exceptions are treated as failures."""

    async def store_ticket(self, ticket: Ticket, device: bytes) -> None:
        """Persist ``ticket`` as the new best one for (device, ticket.fleet, ticket.epoch)."""
        ...

    async def load_best_ticket(self, device: bytes, fleet: bytes, epoch: int) -> Ticket | None:
        """The stored best ticket for (device, fleet, epoch), or None."""
        ...

    async def current_epoch(self) -> int:
        """The chain's current epoch (SPEC 5: floor(block_timestamp / epoch_length))."""
        ...

    async def fleet_check(self, fleet: bytes, node: bytes, device: bytes) -> tuple[bool, bool]:
        """SPEC 5 step 4: (fleet allows this node, fleet allows this device)."""
        ...

    async def payment_check(self, ticket: Ticket, device: bytes) -> None:
        """SPEC 5 step 6: raise TicketError(payment_missing | payment_invalid) if payment is not proven."""
        ...

    async def resolve_name(self, name: str) -> NameRecord | None:
        """A BNS name's record; None if not registered; NameError_ if malformed (no chain call)."""
        ...

    async def node_record(self, node: bytes) -> dict[str, Any] | None:
        """The signed record of another node (DHT, SPEC 6), or None if unknown."""
        ...

    async def get_object(self, key: bytes) -> dict[str, Any] | None:
        """A stored signed DHT object, or None."""
        ...

    async def report(self, stats: dict[str, Any]) -> None:
        """Periodic statistics (EdgeServer.snapshot() plus per-device usage deltas)."""
        ...


class DefaultHooks:
    """In-memory hooks: tickets in a dict, epoch from the wall clock, every fleet allows everything,
    no names, no other nodes. Good for tests and a node without a chain."""

    def __init__(self, epoch_length: int = DEFAULT_EPOCH_LENGTH, epoch: int | None = None) -> None:
        self.epoch_length = epoch_length
        self.epoch = epoch  # fixed epoch (tests), or None for the clock
        self.tickets: dict[tuple[bytes, bytes, int], Ticket] = {}
        self.names: dict[str, NameRecord] = {}
        self.reports: list[dict[str, Any]] = []
        self.denied_devices: set[bytes] = set()
        self.denied_nodes: set[bytes] = set()

    async def store_ticket(self, ticket: Ticket, device: bytes) -> None:
        self.tickets[(device, ticket.fleet, ticket.epoch)] = ticket

    async def load_best_ticket(self, device: bytes, fleet: bytes, epoch: int) -> Ticket | None:
        return self.tickets.get((device, fleet, epoch))

    async def current_epoch(self) -> int:
        if self.epoch is not None:
            return self.epoch
        return epoch_of(int(time.time()), self.epoch_length)

    async def fleet_check(self, fleet: bytes, node: bytes, device: bytes) -> tuple[bool, bool]:
        return node not in self.denied_nodes, device not in self.denied_devices

    async def payment_check(self, ticket: Ticket, device: bytes) -> None:
        return None

    async def resolve_name(self, name: str) -> NameRecord | None:
        return self.names.get(name)

    async def node_record(self, node: bytes) -> dict[str, Any] | None:
        return None

    async def get_object(self, key: bytes) -> dict[str, Any] | None:
        return None

    async def report(self, stats: dict[str, Any]) -> None:
        self.reports.append(stats)
        del self.reports[:-10]  # keep the last few for tests; never grow without bound
