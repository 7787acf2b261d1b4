"""A discrete-event simulator of a Kademlia network for `chrnode.dht` (tests and bench).

Every node is a real `DhtNode`; only the wire is simulated. Seeded and deterministic: one
`random.Random` draws the ids, the latencies, the dead and silent nodes and the lookups, and
events at one instant run in the order they were scheduled.

- Latency: each node has an access delay drawn once (log-normal, median `access_median`); one
  message takes the sum of both ends' delays times a per-message log-normal jitter.
- Dead nodes (a killed process): a request to one fails after one round trip (a reset).
- Silent nodes (SIGSTOP): a request to one is never answered; only the hard timeout ends it.
- Liars: answer every FIND with k made-up contacts nearer the target than any real node
  (unreachable: a request to one is reset); other requests they answer honestly.
- Population: `populate()` fills every table as a converged network has it (per bucket, up to k
  random nodes of its range, taken from the sorted ids); `join_all()` instead has nodes join one
  by one through a bootstrap node with real lookups, to test the join path.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from chrnode.dht.ids import ID_BITS, Contact, as_id, as_int
from chrnode.dht.lookup import Lookup, LookupResult
from chrnode.dht.messages import Answer, FindNode, FindValue, Nodes, Request
from chrnode.dht.node import Action, DhtConfig, DhtNode, LookupDone, Published, Send
from chrnode.dht.node_lookups import LookupFactory
from chrnode.dht.store import Value

LIVE, DEAD, SILENT, LIAR = "live", "dead", "silent", "liar"


@dataclass
class SimNode:
    dht: DhtNode
    access: float  # this node's share of every message's one-way delay, in seconds
    state: str = LIVE
    tick_at: float = math.inf


@dataclass
class LookupRun:
    origin: bytes
    target: bytes
    result: LookupResult
    latency: float


@dataclass
class SimNetwork:
    size: int
    seed: int = 1
    config: DhtConfig = field(default_factory=lambda: DhtConfig(maintenance_period=math.inf))
    lookup_factory: LookupFactory = Lookup
    access_median: float = 0.015
    access_sigma: float = 0.5
    jitter_sigma: float = 0.25

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.now = 0.0
        self.nodes: dict[bytes, SimNode] = {}
        self.contacts: dict[bytes, Contact] = {}
        self._events: list[tuple[float, int, tuple[object, ...]]] = []
        self._seq = 0
        self.done: dict[tuple[bytes, int], tuple[LookupResult, float]] = {}
        self.published: list[tuple[bytes, Published]] = []
        self.messages = 0
        self.heard: dict[bytes, set[bytes]] = {}  # node -> the nodes whose messages reached it
        for _ in range(self.size):
            address = as_id(self.rng.getrandbits(ID_BITS))
            contact = Contact(address, "sim", 51055, record=address)
            self.contacts[address] = contact
            node = DhtNode(
                contact,
                config=self.config,
                rng=random.Random(self.rng.getrandbits(64)),
                lookup_factory=self.lookup_factory,
            )
            access = self.access_median * self.rng.lognormvariate(0.0, self.access_sigma)
            self.nodes[address] = SimNode(node, access)
        self.sorted_ids = sorted(as_int(a) for a in self.nodes)

    # -- building the network ------------------------------------------------------------------

    def populate(self) -> None:
        """Fill every routing table as in a converged network (see the module docstring)."""
        ids, k = self.sorted_ids, self.config.k
        for address, sim in self.nodes.items():
            x = as_int(address)
            for index in range(ID_BITS - 1, -1, -1):
                own_lo = (x >> (index + 1)) << (index + 1)
                if bisect.bisect_left(ids, own_lo + (2 << index)) - bisect.bisect_left(ids, own_lo) <= 1:
                    break  # our subtree of this size holds only us: every nearer bucket is empty
                lo = own_lo | ((~x >> index) & 1) << index
                first, last = bisect.bisect_left(ids, lo), bisect.bisect_left(ids, lo + (1 << index))
                chosen = list(range(first, last))
                if len(chosen) > k:
                    chosen = sorted(self.rng.sample(chosen, k))
                for i in chosen:
                    sim.dht.table.heard_from(self.contacts[as_id(ids[i])], self.now)

    def join_all(self, bootstrap: bytes | None = None) -> None:
        """Nodes join one at a time through `bootstrap` (the first node by default)."""
        order = list(self.nodes)
        first = bootstrap or order[0]
        for address in order:
            if address == first:
                continue
            lookup_id, actions = self.nodes[address].dht.join([self.contacts[first]], self.now)
            self._act(address, actions)
            self.wait_lookup(address, lookup_id)

    def fail(self, fraction: float, state: str, spare: frozenset[bytes] = frozenset()) -> list[bytes]:
        """Make `fraction` of the live nodes (not in `spare`) DEAD or SILENT."""
        live = [a for a, s in self.nodes.items() if s.state == LIVE and a not in spare]
        chosen = self.rng.sample(live, round(fraction * self.size))
        for address in chosen:
            self.nodes[address].state = state
        return chosen

    def place(self, value: Value) -> list[bytes]:
        """Store `value` at the k live nodes closest to its key, as a finished publish leaves it."""
        holders = self.closest_live(value.key, self.config.k)
        for address in holders:
            self.nodes[address].dht.store.put(value, self.now)
        return holders

    def closest_live(self, target: bytes, n: int, exclude: bytes | None = None) -> list[bytes]:
        t = as_int(target)
        live = (a for a, s in self.nodes.items() if s.state == LIVE and a != exclude)
        return heapq.nsmallest(n, live, key=lambda a: as_int(a) ^ t)

    def live(self) -> list[bytes]:
        return [a for a, s in self.nodes.items() if s.state == LIVE]

    # -- running -------------------------------------------------------------------------------

    def lookup(self, origin: bytes, target: bytes, *, find_value: bool = False) -> LookupRun:
        started = self.now
        lookup_id, actions = self.nodes[origin].dht.lookup(target, started, find_value=find_value)
        self._act(origin, actions)
        result, finished = self.wait_lookup(origin, lookup_id)
        return LookupRun(origin, target, result, finished - started)

    def wait_lookup(self, origin: bytes, lookup_id: int) -> tuple[LookupResult, float]:
        """Run until `origin`'s lookup `lookup_id` is done: its result and the time it ended."""
        self.run_until(lambda: (origin, lookup_id) in self.done)
        return self.done.pop((origin, lookup_id))

    def publish(self, origin: bytes, value: Value) -> list[Contact]:
        before = len(self.published)
        self._act(origin, self.nodes[origin].dht.publish(value, self.now)[1])
        self.run_until(lambda: len(self.published) > before)
        return self.published[-1][1].sent_to

    def run_until(self, condition: Callable[[], bool], limit: float = math.inf) -> None:
        while not condition():
            if not self._events or self._events[0][0] > limit:
                raise RuntimeError(f"the simulation ran out of events at t={self.now:.3f}")
            self.now, _, event = heapq.heappop(self._events)
            self._handle(event)

    def advance(self, until: float) -> None:
        """Run every event up to simulated time `until` (timers included)."""
        while self._events and self._events[0][0] <= until:
            self.now, _, event = heapq.heappop(self._events)
            self._handle(event)
        self.now = max(self.now, until)

    # -- internals -----------------------------------------------------------------------------

    def _at(self, when: float, event: tuple[object, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, event))

    def _delay(self, a: bytes, b: bytes) -> float:
        base = sum(self.nodes[x].access if x in self.nodes else self.access_median for x in (a, b))
        return base * self.rng.lognormvariate(0.0, self.jitter_sigma)

    def _act(self, address: bytes, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.messages += 1
                to = action.to.address
                event = ("request", to, address, action.request_id, action.request)
                self._at(self.now + self._delay(address, to), event)
            elif isinstance(action, LookupDone):
                self.done[(address, action.lookup_id)] = (action.result, self.now)
            else:
                self.published.append((address, action))
        self._schedule_tick(address)

    def _schedule_tick(self, address: bytes) -> None:
        sim = self.nodes[address]
        deadline = sim.dht.next_deadline()
        if deadline < sim.tick_at and math.isfinite(deadline):
            sim.tick_at = deadline
            self._at(deadline, ("tick", address))

    def _handle(self, event: tuple[object, ...]) -> None:
        kind = event[0]
        if kind == "tick":
            address = event[1]
            assert isinstance(address, bytes)
            sim = self.nodes[address]
            if sim.tick_at != self.now:
                return  # superseded by an earlier deadline
            sim.tick_at = math.inf
            if sim.state == LIVE:
                self._act(address, sim.dht.tick(self.now))
            return
        if kind == "request":
            _, to, sender, request_id, request = event
            assert isinstance(to, bytes) and isinstance(sender, bytes) and isinstance(request_id, int)
            self._deliver_request(to, sender, request_id, request)  # type: ignore[arg-type]
            return
        _, to, source, request_id, answer = event
        assert isinstance(to, bytes) and isinstance(source, bytes) and isinstance(request_id, int)
        sim = self.nodes[to]
        if sim.state not in (LIVE, LIAR):
            return
        if answer is None:
            self._act(to, sim.dht.on_failure(request_id, self.now))
        else:
            self.heard.setdefault(to, set()).add(source)
            self._act(to, sim.dht.on_answer(request_id, answer, self.now))  # type: ignore[arg-type]

    def _deliver_request(self, to: bytes, sender: bytes, request_id: int, request: Request) -> None:
        target = self.nodes.get(to)  # None: a made-up address, nobody there
        if target is not None and target.state == SILENT:
            return
        reply: Answer | None = None
        if target is not None and target.state in (LIVE, LIAR):
            self.heard.setdefault(to, set()).add(sender)
            reply, actions = target.dht.on_request(self.contacts[sender], request, self.now)
            self._act(to, actions)
            if target.state == LIAR and isinstance(request, FindNode | FindValue):
                reply = Nodes(self._fakes(request.target if isinstance(request, FindNode) else request.key))
        # a dead node's host resets the connection: the failure comes back after the same trip
        self._at(self.now + self._delay(to, sender), ("answer", sender, to, request_id, reply))

    def _fakes(self, target: bytes) -> list[Contact]:
        """k addresses nearer `target` than any real node is (sharing its first 144 bits)."""
        t = as_int(target)
        return [
            Contact(as_id(t ^ (self.rng.getrandbits(16) | 1)), "203.0.113.9", 51055)
            for _ in range(self.config.k)
        ]
