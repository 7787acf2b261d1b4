"""The node-level DHT machine: it ties the routing table, the lookups, the value store and the
timers together. Events in, actions out, time an argument (h11 style); no I/O.

Inputs (each returns the actions it causes):
- `on_request(sender, request, now)`: a peer's PING / STORE / FIND_NODE / FIND_VALUE over a link
  whose peer hello proved `sender` (SPEC 4), so the sender is verified; returns the answer too;
- `on_answer(request_id, answer, now)` and `on_failure(request_id, now)` (reset, error answer,
  closed link) for requests this node sent;
- `tick(now)`: soft and hard timeouts, expiry, refresh and republish; call it at
  `next_deadline()` (or earlier: it does only what is due);
- `lookup`, `join`, `publish`: work asked by the rest of the node.

Actions: `Send` (a request to send, with the id its answer must carry back), `LookupDone` (a
finished lookup and why it ran), `Published` (the nodes a value was sent to).

Timeouts: every request has a hard timeout (`hard_timeout`) after which it failed; a lookup's
query also has a soft timeout from the RTT estimator (SPEC 6, see `lookup`), which frees its
slot in the lookup while the request stays open until its answer or its hard timeout.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from chrnode.dht.ids import ALPHA, Contact, K
from chrnode.dht.lookup import Lookup, LookupMachine, LookupResult
from chrnode.dht.maintenance import Maintenance
from chrnode.dht.messages import (
    Answer,
    FindNode,
    FindValue,
    Found,
    Nodes,
    Ping,
    Pong,
    Refused,
    Request,
    Store,
    Stored,
)
from chrnode.dht.routing import Probe, RoutingTable
from chrnode.dht.rtt import RttTable
from chrnode.dht.store import STORED, Value, ValueStore

log = logging.getLogger("chrnode.dht")

LookupFactory = Callable[..., LookupMachine]


@dataclass(frozen=True)
class DhtConfig:
    k: int = K
    alpha: int = ALPHA
    hard_timeout: float = 5.0  # a request unanswered this long failed
    rtt_initial: float = 1.0  # soft timeout before any round trip was measured (RFC 6298)
    rtt_floor: float = 0.05
    max_failures: int = 5  # failures in a row that evict a contact with no replacement waiting
    fresh_for: float = 60.0  # a contact heard from this recently is not probed before eviction
    refresh_interval: float = 3600.0
    republish_interval: float = 3600.0
    maintenance_period: float = 60.0
    cache_found_values: bool = True  # FIND_VALUE stores the value at the closest node without it
    store_capacity: int = 100_000


@dataclass(frozen=True)
class Send:
    request_id: int
    to: Contact
    request: Request


@dataclass(frozen=True)
class LookupDone:
    lookup_id: int
    purpose: str  # "lookup", "join", "refresh", "publish", "republish"
    result: LookupResult


@dataclass(frozen=True)
class Published:
    key: bytes
    sent_to: list[Contact]


Action = Send | LookupDone | Published


@dataclass
class _Outstanding:
    contact: Contact
    request: Request
    sent_at: float
    lookup_id: int | None


@dataclass
class _Running:
    machine: LookupMachine
    purpose: str
    value: Value | None = None  # what a publish lookup stores when done
    requests: set[int] = field(default_factory=set)


class DhtNode:
    def __init__(
        self,
        own: Contact,
        *,
        config: DhtConfig | None = None,
        rng: random.Random | None = None,
        now: float = 0.0,
        lookup_factory: LookupFactory = Lookup,
    ) -> None:
        self.own = own
        self.config = config = config or DhtConfig()
        self.rng = rng or random.Random()
        self.table = RoutingTable(
            own.address, k=config.k, max_failures=config.max_failures, fresh_for=config.fresh_for, started=now
        )
        self.store = ValueStore(config.store_capacity)
        self.rtt = RttTable(config.rtt_initial, config.rtt_floor, config.hard_timeout)
        self.maintenance = Maintenance(
            refresh_interval=config.refresh_interval,
            republish_interval=config.republish_interval,
            period=config.maintenance_period,
            started=now,
        )
        self.lookup_factory = lookup_factory
        self._outstanding: dict[int, _Outstanding] = {}
        self._lookups: dict[int, _Running] = {}
        self._timers: list[tuple[float, int, bool]] = []  # (deadline, request id, is_hard)
        self._next_request = 1
        self._next_lookup = 1

    # -- work asked by the node ----------------------------------------------------------------

    def lookup(
        self,
        target: bytes,
        now: float,
        *,
        find_value: bool = False,
        seeds: Iterable[Contact] = (),
        purpose: str = "lookup",
    ) -> tuple[int, list[Action]]:
        """Start a FIND_NODE (or FIND_VALUE) lookup of `target`; its `LookupDone` comes later
        (or at once, when there is nobody to ask or the value is held here)."""
        lookup_id, self._next_lookup = self._next_lookup, self._next_lookup + 1
        held = self.store.get(target, now) if find_value else None
        known = self.table.closest(target, self.config.k)
        machine = self.lookup_factory(
            target,
            known + [s for s in seeds if s not in known],
            find_value=find_value,
            own=self.own.address,
            k=self.config.k,
            alpha=self.config.alpha,
        )
        self.table.touch(target, now)
        if held is not None:
            done = LookupResult(target, True, [], held, self.own, None, 0, 0)
            return lookup_id, [LookupDone(lookup_id, purpose, done)]
        running = _Running(machine, purpose)
        self._lookups[lookup_id] = running
        return lookup_id, self._drive(lookup_id, running, machine.start(), now)

    def join(self, seeds: Iterable[Contact], now: float) -> tuple[int, list[Action]]:
        """Join through `seeds` (fleet nodes): a lookup of our own id (Kademlia 2.3); the
        refresh timers then fill the farther buckets. Seeds enter the table when they answer."""
        return self.lookup(self.own.address, now, seeds=seeds, purpose="join")

    def publish(self, value: Value, now: float) -> tuple[str, list[Action]]:
        """Hold `value` and store it at the k nodes closest to its key (STORED or the code)."""
        status = self.store.put(value, now)
        if status != STORED:
            return status, []
        return status, self._publish_lookup(value, now, "publish")

    # -- events from the network ---------------------------------------------------------------

    def on_request(self, sender: Contact, request: Request, now: float) -> tuple[Answer, list[Action]]:
        actions = self._probes(self.table.heard_from(sender, now), now)
        if isinstance(request, Ping):
            return Pong(now), actions
        if isinstance(request, Store):
            status = self.store.put(request.value, now)
            if status == STORED:
                return Stored(), actions
            return Refused(status, _REFUSALS[status]), actions
        if isinstance(request, FindValue):
            value = self.store.get(request.key, now)
            if value is not None:
                return Found(value), actions
            target = request.key
        else:
            target = request.target
        nearest = self.table.closest(target, self.config.k + 1)
        return Nodes([c for c in nearest if c != sender][: self.config.k]), actions

    def on_answer(self, request_id: int, answer: Answer, now: float) -> list[Action]:
        sent = self._outstanding.pop(request_id, None)
        if sent is None:
            return []  # late (after its hard timeout) or never ours
        if isinstance(answer, Refused):
            return self._failed(request_id, sent, now)
        self.rtt.sample(sent.contact.address, now - sent.sent_at)
        actions = self._probes(self.table.heard_from(sent.contact, now), now)
        running = self._lookups.get(sent.lookup_id) if sent.lookup_id is not None else None
        if running is None or sent.lookup_id is None:
            return actions
        running.requests.discard(request_id)
        address = sent.contact.address
        if isinstance(answer, Found):
            queries = running.machine.found(address, answer.value)
        elif isinstance(answer, Nodes):
            queries = running.machine.answered(address, answer.contacts)
        else:
            queries = running.machine.failed(address)
        return actions + self._drive(sent.lookup_id, running, queries, now)

    def on_failure(self, request_id: int, now: float) -> list[Action]:
        sent = self._outstanding.pop(request_id, None)
        return self._failed(request_id, sent, now) if sent is not None else []

    def contact_seen(self, contact: Contact, now: float) -> list[Action]:
        """`contact` spoke to us itself outside a request of ours (a link came up with its
        signed record): it is verified, and the table keeps this copy of it."""
        return self._probes(self.table.heard_from(contact, now), now)

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while self._timers and self._timers[0][0] <= now:
            _, request_id, hard = heapq.heappop(self._timers)
            sent = self._outstanding.get(request_id)
            if sent is None:
                continue
            if hard:
                del self._outstanding[request_id]
                actions += self._failed(request_id, sent, now)
            elif sent.lookup_id is not None and sent.lookup_id in self._lookups:
                running = self._lookups[sent.lookup_id]
                queries = running.machine.soft_timeout(sent.contact.address)
                actions += self._drive(sent.lookup_id, running, queries, now)
        for value in self.store.expire(now):
            log.debug("value %s (seq %d) expired", value.key.hex(), value.seq)
        if now >= self.maintenance.next_run:
            work = self.maintenance.run(now, self.table, self.store, self.rng)
            for target in work.refresh:
                actions += self.lookup(target, now, purpose="refresh")[1]
            for value in work.republish:
                actions += self._publish_lookup(value, now, "republish")
        return actions

    def next_deadline(self) -> float:
        deadlines = [self.maintenance.next_run]
        if self._timers:
            deadlines.append(self._timers[0][0])
        expiry = self.store.next_expiry()
        if expiry is not None:
            deadlines.append(expiry)
        return min(deadlines)

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    @property
    def running_lookups(self) -> int:
        return len(self._lookups)

    # -- internals -----------------------------------------------------------------------------

    def _send(self, contact: Contact, request: Request, now: float, lookup_id: int | None) -> Send:
        request_id, self._next_request = self._next_request, self._next_request + 1
        self._outstanding[request_id] = _Outstanding(contact, request, now, lookup_id)
        heapq.heappush(self._timers, (now + self.config.hard_timeout, request_id, True))
        if lookup_id is not None:
            soft = min(self.rtt.timeout(contact.address), self.config.hard_timeout)
            heapq.heappush(self._timers, (now + soft, request_id, False))
        return Send(request_id, contact, request)

    def _probes(self, probes: list[Probe], now: float) -> list[Action]:
        return [self._send(p.contact, Ping(), now, None) for p in probes]

    def _failed(self, request_id: int, sent: _Outstanding, now: float) -> list[Action]:
        actions = self._probes(self.table.failed(sent.contact.address, now), now)
        if sent.lookup_id is None or sent.lookup_id not in self._lookups:
            return actions
        running = self._lookups[sent.lookup_id]
        running.requests.discard(request_id)
        queries = running.machine.failed(sent.contact.address)
        return actions + self._drive(sent.lookup_id, running, queries, now)

    def _drive(self, lookup_id: int, running: _Running, queries: list[Contact], now: float) -> list[Action]:
        machine = running.machine
        request = FindValue(machine.target) if machine.find_value else FindNode(machine.target)
        actions: list[Action] = []
        for contact in queries:
            send = self._send(contact, request, now, lookup_id)
            running.requests.add(send.request_id)
            actions.append(send)
        if machine.done:
            actions += self._finish(lookup_id, running, now)
        return actions

    def _finish(self, lookup_id: int, running: _Running, now: float) -> list[Action]:
        del self._lookups[lookup_id]
        for request_id in running.requests:  # late answers still reach the table, not the lookup
            sent = self._outstanding.get(request_id)
            if sent is not None:
                sent.lookup_id = None
        result = running.machine.result()
        actions: list[Action] = [LookupDone(lookup_id, running.purpose, result)]
        for contact in result.unqueried:  # SPEC 6: named by others, they enter once they answer
            actions += self._probes(self.table.learned(contact, now), now)
        if running.value is not None:
            targets = result.closest[: self.config.k]
            actions += [self._send(c, Store(running.value), now, None) for c in targets]
            actions.append(Published(running.value.key, targets))
        elif result.value is not None and result.cache_at is not None and self.config.cache_found_values:
            actions.append(self._send(result.cache_at, Store(result.value), now, None))
        return actions

    def _publish_lookup(self, value: Value, now: float, purpose: str) -> list[Action]:
        lookup_id, actions = self.lookup(value.key, now, purpose=purpose)
        running = self._lookups.get(lookup_id)
        if running is not None:
            running.value = value
            return actions
        # Finished at once (nobody to ask): nothing to store anywhere but here.
        return [*actions, Published(value.key, [])]


_REFUSALS = {
    "stale": "a newer object (higher seq) is held for this key",
    "expired": "the object's `expires` has passed",
    "rate_limited": "this node holds as many objects as it may; try another node or later",
}
