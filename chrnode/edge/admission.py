"""Admission of connections under pressure: a pure state machine (events in, decisions out).

A listener that holds a slot for every connection until it authenticates can be starved by
connections that never do (slowloris: connect, never start TLS). This policy keeps slots for
honest clients:

- a cap on concurrent connections per source address, and per subnet (the /24 of an IPv4
  address, the /64 of an IPv6 one; an IPv4-mapped IPv6 address counts as IPv4);
- a deadline for every *pending* connection (accepted, not yet authenticated: for the device
  port the TLS handshake plus an accepted hello);
- when a cap is reached, the *oldest pending* connection of the group that is full (the address,
  the subnet, or the whole listener) is shed to make room; authenticated connections are never
  shed. Only when the full group holds no pending connection is the newcomer refused.

A connection that has been pending longest is the one least likely to be an honest device
(which finishes TLS and hello in milliseconds), and the newcomer is the one most likely to be.

    policy = Admission(AdmissionLimits(max_connections=1000, per_address=64, per_subnet=256,
                                       pending_timeout=5.0))
    decision = policy.accept(conn, "10.0.0.7", now)   # Admit(conn, shed=(...)) or Refuse(conn, ...)
    policy.authenticated(conn)                         # leaves the pending set: never shed, no deadline
    policy.pending(conn, now)                          # back to pending (RPC: the next request)
    policy.closed(conn)                                # gone (a no-op for shed or expired ones)
    expired = policy.tick(now)                         # pending connections past their deadline

Shed and expired connections leave the accounting at once, so counts never exceed a cap; the
adapter closes them and a later ``closed()`` for them is a no-op. Nothing here does I/O or reads a
clock: ``now`` is given. Cost per event is O(1) (amortised), independent of the number of
connections; ``tick`` costs O(expired).
"""

from __future__ import annotations

import heapq
import ipaddress
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = [
    "Admission",
    "AdmissionLimits",
    "Admit",
    "Refuse",
    "subnet_of",
]

Conn = TypeVar("Conn", bound=Hashable)
Group = tuple[int, int]  # (IP version, the prefix as an integer)

ADDRESS, SUBNET, TOTAL = "address", "subnet", "total"  # which cap a decision is about


@dataclass(frozen=True)
class AdmissionLimits:
    """The caps; 0 for ``per_address`` or ``per_subnet`` means no such cap."""

    max_connections: int
    per_address: int = 0
    per_subnet: int = 0
    pending_timeout: float = 5.0
    prefix_v4: int = 24
    prefix_v6: int = 64

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.per_address < 0 or self.per_subnet < 0:
            raise ValueError(f"admission caps must be positive (0 = off for the per-group ones): {self}")
        if not self.pending_timeout > 0:
            raise ValueError(f"pending_timeout must be > 0 seconds, got {self.pending_timeout}")


@dataclass(frozen=True)
class Admit(Generic[Conn]):
    """Let ``conn`` in; first close the connections in ``shed`` (each is pending, the oldest of the
    group that was full), for the reason ``cap`` (ADDRESS, SUBNET or TOTAL)."""

    conn: Conn
    shed: tuple[Conn, ...] = ()
    cap: str = ""


@dataclass(frozen=True)
class Refuse(Generic[Conn]):
    """Close ``conn`` at once: the ``cap`` group is full of authenticated connections."""

    conn: Conn
    cap: str
    limit: int


@dataclass
class _Entry:
    address: Group
    subnet: Group
    since: float  # when it (last) became pending; meaningless once authenticated
    deadline: float | None  # None: authenticated
    seq: int = 0  # tells a live heap item from a stale one


@dataclass
class _Group(Generic[Conn]):
    count: int = 0
    pending: OrderedDict[Conn, None] = field(default_factory=OrderedDict)  # oldest first


def subnet_of(ip: str, prefix_v4: int = 24, prefix_v6: int = 64) -> tuple[Group, Group]:
    """(address, subnet) group keys of ``ip``. An unparsable text (a Unix socket, say) is its own
    group: it can never be confused with a real address."""
    try:
        parsed = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        key = (0, hash(ip))
        return key, key
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    value = int(parsed)
    if parsed.version == 4:
        return (4, value), (4, value >> (32 - prefix_v4))
    return (6, value), (6, value >> (128 - prefix_v6))


class Admission(Generic[Conn]):
    """The admission policy of one listener (see the module docstring)."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._conns: dict[Conn, _Entry] = {}
        self._addresses: dict[Group, _Group[Conn]] = {}
        self._subnets: dict[Group, _Group[Conn]] = {}
        self._pending: OrderedDict[Conn, None] = OrderedDict()  # oldest first, all groups
        self._deadlines: list[tuple[float, int, Conn]] = []  # a heap, with stale items
        self._seq = 0
        self.shed_total = 0
        self.refused_total = 0
        self.expired_total = 0

    # ---- events -----------------------------------------------------------------------------

    def accept(
        self, conn: Conn, ip: str, now: float, timeout: float | None = None
    ) -> Admit[Conn] | Refuse[Conn]:
        """A new connection ``conn`` from ``ip``: admit it (possibly shedding others) or refuse it.
        An admitted connection is pending, with a deadline ``timeout`` (default: the limits')."""
        if conn in self._conns:
            raise ValueError(f"connection {conn!r} was already admitted")
        limits = self.limits
        address, subnet = subnet_of(ip, limits.prefix_v4, limits.prefix_v6)
        # Caps hold before every event, so freeing one slot in the narrowest full group frees one
        # in every wider group too (the victim belongs to all of them): at most one is shed.
        full: tuple[str, int, OrderedDict[Conn, None]] | None = None
        by_address = self._addresses.get(address)
        by_subnet = self._subnets.get(subnet)
        if limits.per_address and by_address is not None and by_address.count >= limits.per_address:
            full = (ADDRESS, limits.per_address, by_address.pending)
        elif limits.per_subnet and by_subnet is not None and by_subnet.count >= limits.per_subnet:
            full = (SUBNET, limits.per_subnet, by_subnet.pending)
        elif len(self._conns) >= limits.max_connections:
            full = (TOTAL, limits.max_connections, self._pending)
        shed: tuple[Conn, ...] = ()
        cap = ""
        if full is not None:
            cap, limit, pending = full
            if not pending:
                self.refused_total += 1
                return Refuse(conn, cap, limit)
            victim = next(iter(pending))
            self._drop(victim)
            shed = (victim,)
            self.shed_total += 1
        entry = _Entry(address, subnet, now, None)
        self._conns[conn] = entry
        for table, key in ((self._addresses, address), (self._subnets, subnet)):
            group = table.get(key)
            if group is None:
                group = table[key] = _Group()
            group.count += 1
        self._make_pending(conn, entry, now, timeout)
        return Admit(conn, tuple(shed), cap)

    def authenticated(self, conn: Conn) -> None:
        """``conn`` proved itself: no deadline, never shed. Unknown connections are ignored."""
        entry = self._conns.get(conn)
        if entry is not None and entry.deadline is not None:
            self._leave_pending(conn, entry)
            entry.deadline = None

    def pending(self, conn: Conn, now: float, timeout: float | None = None) -> None:
        """``conn`` is pending again from ``now`` (the RPC port: a new request is being read), with
        a new deadline; it goes to the young end of the shedding order."""
        entry = self._conns.get(conn)
        if entry is None:
            return
        if entry.deadline is not None:
            self._leave_pending(conn, entry)
        self._make_pending(conn, entry, now, timeout)

    def closed(self, conn: object) -> None:
        """``conn`` is gone. A no-op for connections already shed, expired or never admitted."""
        if conn in self._conns:
            self._drop(conn)

    def tick(self, now: float) -> list[Conn]:
        """Pending connections whose deadline is past ``now``; they leave the accounting."""
        expired: list[Conn] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _deadline, seq, conn = heapq.heappop(heap)
            entry = self._conns.get(conn)
            if entry is None or entry.seq != seq or entry.deadline is None:
                continue  # stale: closed, authenticated or re-armed since
            expired.append(conn)
            self._drop(conn)
        self.expired_total += len(expired)
        return expired

    # ---- queries ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, conn: object) -> bool:
        return conn in self._conns

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def is_pending(self, conn: Conn) -> bool:
        return conn in self._pending

    def count_of(self, ip: str) -> tuple[int, int]:
        """(connections from the address of ``ip``, connections from its subnet)."""
        address, subnet = subnet_of(ip, self.limits.prefix_v4, self.limits.prefix_v6)
        a, s = self._addresses.get(address), self._subnets.get(subnet)
        return (a.count if a else 0, s.count if s else 0)

    def next_deadline(self) -> float | None:
        """The earliest deadline that may still be live (for a caller that sleeps until it)."""
        return self._deadlines[0][0] if self._deadlines else None

    # ---- internals --------------------------------------------------------------------------

    def _make_pending(self, conn: Conn, entry: _Entry, now: float, timeout: float | None) -> None:
        self._seq += 1
        entry.seq = self._seq
        entry.since = now
        entry.deadline = now + (self.limits.pending_timeout if timeout is None else timeout)
        self._pending[conn] = None
        self._addresses[entry.address].pending[conn] = None
        self._subnets[entry.subnet].pending[conn] = None
        heapq.heappush(self._deadlines, (entry.deadline, entry.seq, conn))
        if len(self._deadlines) > 64 and len(self._deadlines) > 4 * len(self._pending):
            # Re-armed and authenticated entries leave stale items behind: rebuild now and then.
            entries = ((self._conns[c], c) for c in self._pending)
            self._deadlines = [(e.deadline, e.seq, c) for e, c in entries if e.deadline is not None]
            heapq.heapify(self._deadlines)

    def _leave_pending(self, conn: Conn, entry: _Entry) -> None:
        self._pending.pop(conn, None)
        self._addresses[entry.address].pending.pop(conn, None)
        self._subnets[entry.subnet].pending.pop(conn, None)

    def _drop(self, conn: Conn) -> None:
        entry = self._conns.pop(conn)
        self._leave_pending(conn, entry)
        for table, key in ((self._addresses, entry.address), (self._subnets, entry.subnet)):
            group = table[key]
            group.count -= 1
            if group.count == 0:
                del table[key]
