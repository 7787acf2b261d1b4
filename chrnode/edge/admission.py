"""Admission of connections under pressure: a pure state machine (events in, decisions out).

A listener that holds a slot for every connection until it authenticates can be starved by
connections that never do (slowloris: connect, never start TLS). This policy keeps slots for
honest clients:

- a cap on concurrent connections per source address, and per subnet (the /24 of an IPv4
  address, the /64 of an IPv6 one; an IPv4-mapped IPv6 address counts as IPv4);
- a deadline for every *pending* connection (accepted, not yet authenticated: for the device
  port the TLS handshake plus an accepted hello);
- when a cap is reached, a *pending* connection of the group that is full (the address, the
  subnet, or the whole listener) is shed to make room; authenticated connections are never shed.
  Only when the full group holds no pending connection is the newcomer refused.
- which one: a *silent* connection (it has sent nothing yet) before a *spoken* one (its TLS
  handshake is under way: ``accept(..., spoke=True)`` or ``progressed()``), the oldest first in
  each tier (silent ones by when they became pending, spoken ones by when they spoke).

A connection that has been pending longest is the one least likely to be an honest device
(which finishes TLS and hello in milliseconds), and the newcomer is the one most likely to be;
one that connects and says nothing is a slowloris until it proves otherwise.

    policy = Admission(AdmissionLimits(max_connections=1000, per_address=64, per_subnet=256,
                                       pending_timeout=5.0))
    decision = policy.accept(conn, "10.0.0.7", now)   # Admit(conn, shed=(...)) or Refuse(conn, ...)
    policy.progressed(conn)                            # it sent bytes: shed after the silent ones
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
import itertools
import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = [
    "ADDRESS",
    "SUBNET",
    "TOTAL",
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
    """Let ``conn`` in; first close the connections in ``shed`` (pending ones of the group that
    was full), for the reason ``cap`` (ADDRESS, SUBNET or TOTAL)."""

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
class _Group(Generic[Conn]):
    count: int = 0
    silent: OrderedDict[Conn, None] = field(default_factory=OrderedDict)  # pending, oldest first
    spoken: OrderedDict[Conn, None] = field(default_factory=OrderedDict)  # pending, first to speak first

    def victim(self) -> Conn | None:
        """The pending connection to shed first: the oldest silent one, else the oldest spoken."""
        for tier in (self.silent, self.spoken):
            if tier:
                return next(iter(tier))
        return None


@dataclass(eq=False)
class _Entry(Generic[Conn]):
    address: Group
    subnet: Group
    groups: tuple[_Group[Conn], ...]  # its address's, its subnet's, and the all-connections one
    deadline: float | None  # None: authenticated
    spoke: bool
    seq: int = 0  # tells a live heap item from a stale one


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
        self._conns: dict[Conn, _Entry[Conn]] = {}
        self._addresses: dict[Group, _Group[Conn]] = {}
        self._subnets: dict[Group, _Group[Conn]] = {}
        self._all: _Group[Conn] = _Group()  # the max_connections group
        self._deadlines: list[tuple[float, int, Conn]] = []  # a heap, with stale items
        self._seq = 0
        self.shed_total = 0
        self.refused_total = 0
        self.expired_total = 0
        self._reported: tuple[float, tuple[int, int, int]] = (-math.inf, (0, 0, 0))

    # ---- events -----------------------------------------------------------------------------

    def accept(
        self, conn: Conn, ip: str, now: float, timeout: float | None = None, spoke: bool = False
    ) -> Admit[Conn] | Refuse[Conn]:
        """A new connection ``conn`` from ``ip``: admit it (possibly shedding another) or refuse
        it. An admitted connection is pending, with a deadline ``timeout`` seconds away (default:
        the limits'); ``spoke`` says it has already sent bytes."""
        if conn in self._conns:
            raise ValueError(f"connection {conn!r} was already admitted")
        limits = self.limits
        address, subnet = subnet_of(ip, limits.prefix_v4, limits.prefix_v6)
        # Caps hold before every event, so freeing one slot in the narrowest full group frees one
        # in every wider group too (the victim belongs to all of them): at most one is shed.
        full: tuple[str, int, _Group[Conn]] | None = None
        by_address = self._addresses.get(address)
        by_subnet = self._subnets.get(subnet)
        if limits.per_address and by_address is not None and by_address.count >= limits.per_address:
            full = (ADDRESS, limits.per_address, by_address)
        elif limits.per_subnet and by_subnet is not None and by_subnet.count >= limits.per_subnet:
            full = (SUBNET, limits.per_subnet, by_subnet)
        elif self._all.count >= limits.max_connections:
            full = (TOTAL, limits.max_connections, self._all)
        shed: tuple[Conn, ...] = ()
        cap = ""
        if full is not None:
            cap, limit, group = full
            victim = group.victim()
            if victim is None:
                self.refused_total += 1
                return Refuse(conn, cap, limit)
            self._drop(victim)
            shed = (victim,)
            self.shed_total += 1
        if shed:  # the victim may have been the last of its address or subnet: look again
            by_address, by_subnet = self._addresses.get(address), self._subnets.get(subnet)
        if by_address is None:
            by_address = self._addresses[address] = _Group()
        if by_subnet is None:
            by_subnet = self._subnets[subnet] = _Group()
        entry = _Entry(address, subnet, (by_address, by_subnet, self._all), None, spoke)
        self._conns[conn] = entry
        for group in entry.groups:
            group.count += 1
        self._make_pending(conn, entry, now, timeout)
        return Admit(conn, shed, cap)

    def progressed(self, conn: Conn) -> None:
        """``conn`` sent its first bytes: while pending it is shed only after every silent one."""
        entry = self._conns.get(conn)
        if entry is None or entry.spoke:
            return
        entry.spoke = True
        if entry.deadline is not None:
            for group in entry.groups:
                group.silent.pop(conn, None)
                group.spoken[conn] = None

    def authenticated(self, conn: Conn) -> None:
        """``conn`` proved itself: no deadline, never shed. Unknown connections are ignored."""
        entry = self._conns.get(conn)
        if entry is not None and entry.deadline is not None:
            self._leave_pending(conn, entry)
            entry.deadline = None

    def pending(self, conn: Conn, now: float, timeout: float | None = None) -> None:
        """``conn`` is pending again from ``now`` (the RPC port: a new request is being read), with
        a new deadline; it goes to the young end of its tier."""
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
        return self._all.count

    def __contains__(self, conn: object) -> bool:
        return conn in self._conns

    @property
    def pending_count(self) -> int:
        return len(self._all.silent) + len(self._all.spoken)

    def is_pending(self, conn: Conn) -> bool:
        return conn in self._all.silent or conn in self._all.spoken

    def count_of(self, ip: str) -> tuple[int, int]:
        """(connections from the address of ``ip``, connections from its subnet)."""
        address, subnet = subnet_of(ip, self.limits.prefix_v4, self.limits.prefix_v6)
        a, s = self._addresses.get(address), self._subnets.get(subnet)
        return (a.count if a else 0, s.count if s else 0)

    def counters(self) -> dict[str, int]:
        """For snapshots: pending now, and shed, refused and expired since start."""
        return {
            "pending": self.pending_count,
            "shed_total": self.shed_total,
            "refused_total": self.refused_total,
            "expired_total": self.expired_total,
        }

    def pressure_report(self, now: float, every: float = 60.0) -> tuple[int, int, int] | None:
        """(shed, refused, expired) since the last report, if any happened and the last report is
        ``every`` seconds old: what an adapter logs, one line per ``every`` at most, however hard
        it is pushed (call it on every decision and now and then, so the tail is reported too)."""
        totals = (self.shed_total, self.refused_total, self.expired_total)
        last_at, last = self._reported
        if totals == last or now - last_at < every:
            return None
        self._reported = (now, totals)
        return (totals[0] - last[0], totals[1] - last[1], totals[2] - last[2])

    # ---- internals --------------------------------------------------------------------------

    def _make_pending(self, conn: Conn, entry: _Entry[Conn], now: float, timeout: float | None) -> None:
        self._seq += 1
        entry.seq = self._seq
        entry.deadline = now + (self.limits.pending_timeout if timeout is None else timeout)
        for group in entry.groups:
            (group.spoken if entry.spoke else group.silent)[conn] = None
        heapq.heappush(self._deadlines, (entry.deadline, entry.seq, conn))
        if len(self._deadlines) > 64 and len(self._deadlines) > 4 * self.pending_count:
            # Re-armed and authenticated entries leave stale items behind: rebuild now and then.
            live = [(c, self._conns[c]) for c in itertools.chain(self._all.silent, self._all.spoken)]
            self._deadlines = [(e.deadline, e.seq, c) for c, e in live if e.deadline is not None]
            heapq.heapify(self._deadlines)

    def _leave_pending(self, conn: Conn, entry: _Entry[Conn]) -> None:
        tier = "spoken" if entry.spoke else "silent"
        for group in entry.groups:
            getattr(group, tier).pop(conn, None)

    def _drop(self, conn: Conn) -> None:
        entry = self._conns.pop(conn)
        self._leave_pending(conn, entry)
        for group in entry.groups:
            group.count -= 1
        if entry.groups[0].count == 0:
            del self._addresses[entry.address]
        if entry.groups[1].count == 0:
            del self._subnets[entry.subnet]
