"""The node's lookups, a mixin of `DhtNode` (chrnode.dht.node): the work the rest of the node
asks for (`lookup`, `join`, `refresh_beyond_nearest`, `publish`) and the life of each lookup.

A lookup is started with its purpose ("lookup", "join", "rejoin", "refresh", "publish",
"republish"), driven (the queries its chrnode.dht.lookup machine returns go out as requests)
and finished: its `LookupDone`, a join's outcome for the rejoin backoff (chrnode.dht.rejoin),
the next of a join's paced refreshes (chrnode.dht.paced), probes of the contacts it heard of,
a publish's STOREs, the FIND_VALUE result cached at the closest node without it.

`DhtNode` sets the attributes declared on `NodeLookups` in its `__init__` and provides the three
request services below (`_send`, `_probes`, `_detach`): the open requests and their timers stay
in chrnode.dht.node, which imports this module, never the other way round.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from chrnode.dht.actions import Action, DhtConfig, LookupDone, Published, Send
from chrnode.dht.ids import ID_BITS, Contact, distance, random_id_in_bucket
from chrnode.dht.lookup import LookupMachine, LookupResult
from chrnode.dht.messages import FindNode, FindValue, Request, Store
from chrnode.dht.paced import PacedRefreshes
from chrnode.dht.rejoin import REJOINED, RETRY, Rejoin
from chrnode.dht.routing import Probe, RoutingTable
from chrnode.dht.store import STORED, Value, ValueStore

__all__ = ["LookupFactory", "NodeLookups"]

log = logging.getLogger("chrnode.dht")

LookupFactory = Callable[..., LookupMachine]

_JOINS = ("join", "rejoin")


@dataclass
class _Running:
    machine: LookupMachine
    purpose: str
    value: Value | None = None  # what a publish lookup stores when done
    requests: set[int] = field(default_factory=set)


class NodeLookups:
    """The lookups half of `DhtNode`; the node's `__init__` sets every attribute declared here."""

    own: Contact
    config: DhtConfig
    rng: random.Random
    table: RoutingTable
    store: ValueStore
    lookup_factory: LookupFactory
    fleet: list[Contact]  # the seeds of `join`, joined through again when the table empties
    rejoin: Rejoin
    counters: Counter[str]
    _lookups: dict[int, _Running]
    _next_lookup: int
    _paced: PacedRefreshes  # the join's refreshes
    _pacing: bool

    # -- what DhtNode provides (its open requests, chrnode.dht.node) ---------------------------

    def _send(self, contact: Contact, request: Request, now: float, lookup_id: int | None) -> Send:
        """Open a request (with its timers) and return the action that sends it."""
        raise NotImplementedError

    def _probes(self, probes: list[Probe], now: float) -> list[Action]:
        """Send the table's probes (PINGs of its upkeep)."""
        raise NotImplementedError

    def _detach(self, request_ids: Iterable[int]) -> None:
        """A lookup finished: its open requests' answers still reach the table, not the lookup."""
        raise NotImplementedError

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
        return lookup_id, self._start(lookup_id, target, now, find_value, seeds, purpose)

    def _start(
        self,
        lookup_id: int,
        target: bytes,
        now: float,
        find_value: bool,
        seeds: Iterable[Contact],
        purpose: str,
    ) -> list[Action]:
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
            return [LookupDone(lookup_id, purpose, done)]
        running = _Running(machine, purpose)
        self._lookups[lookup_id] = running
        if purpose in _JOINS:
            self.rejoin.started(lookup_id)
        return self._drive(lookup_id, running, machine.start(), now)

    def join(self, seeds: Iterable[Contact], now: float) -> tuple[int, list[Action]]:
        """Join through `seeds` (fleet nodes): a lookup of our own id (Kademlia 2.3), then the
        caller's `refresh_beyond_nearest` fills the farther buckets. Seeds enter the table when
        they answer. They are kept: whenever the table is empty later, the node joins through
        them again, with backoff (`rejoin`), and refreshes as after a join, until it has contacts."""
        self.fleet = [s for s in seeds if s.address != self.own.address]
        return self.lookup(self.own.address, now, seeds=self.fleet, purpose="join")

    def refresh_beyond_nearest(
        self, now: float, explored: Iterable[Contact] = ()
    ) -> tuple[list[int], list[Action]]:
        """The second half of a join (Kademlia 2.3): a lookup of a random id in every bucket
        farther than the nearest neighbour's, so the table (and the links to its contacts) is
        filled at once instead of by an hour's refresh timers or by the first lookups' traffic.

        `explored`: the k closest that answered the join's lookup of our own id. That lookup
        met every node nearer to us than the farthest of them, so the buckets wholly inside
        that distance are complete already and are not looked up again (each refresh costs
        about k requests, and on a new node a new link for each).

        Every refresh's lookup id is returned now, but at most `refreshes_in_flight` of them
        run at once, nearest bucket first (chrnode.dht.paced): the rest start as those end."""
        buckets = [i for i, (contacts, _) in self.table.bucket_contents().items() if contacts]
        if not buckets or not self.config.refresh_on_join:
            return [], []
        first = min(buckets) + 1
        met = [c for c in explored if c.address != self.own.address]
        if len(met) >= self.config.k:
            reach = max(distance(self.own.address, c.address) for c in met)
            first = max(first, reach.bit_length() - 1)  # the bucket the farthest one is in
        ids: list[int] = []
        for index in range(first, ID_BITS):  # nearest first: each fills the table the next starts from
            lookup_id, self._next_lookup = self._next_lookup, self._next_lookup + 1
            self._paced.add(lookup_id, random_id_in_bucket(self.own.address, index, self.rng))
            ids.append(lookup_id)
        return ids, self._pace(now)

    def _pace(self, now: float) -> list[Action]:
        """Start the join's queued refreshes while fewer than `refreshes_in_flight` run (see
        chrnode.dht.paced); `_finish` calls it again when one ends. Not reentrant: a refresh
        that ends at once (nobody to ask) frees its slot and this loop starts the next."""
        if self._pacing:
            return []
        self._pacing = True
        actions: list[Action] = []
        try:
            while (queued := self._paced.next()) is not None:
                lookup_id, target = queued
                actions += self._start(lookup_id, target, now, False, (), "refresh")
                if lookup_id not in self._lookups:
                    self._paced.ended(lookup_id)  # finished at once
        finally:
            self._pacing = False
        return actions

    def publish(self, value: Value, now: float) -> tuple[str, list[Action]]:
        """Hold `value` and store it at the k nodes closest to its key (STORED or the code)."""
        status = self.store.put(value, now)
        if status != STORED:
            return status, []
        return status, self._publish_lookup(value, now, "publish")

    # -- the life of a lookup --------------------------------------------------------------------

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
        self._detach(running.requests)  # late answers still reach the table, not the lookup
        result = running.machine.result()
        self.counters["lookups_ok" if result.ok else "lookups_failed"] += 1
        joined = self._joined(lookup_id, running.purpose, result, now) if running.purpose in _JOINS else []
        actions: list[Action] = [LookupDone(lookup_id, running.purpose, result)]
        if self._paced.ended(lookup_id):
            actions += self._pace(now)
        for contact in result.unqueried:  # SPEC 6: named by others, they enter once they answer
            actions += self._probes(self.table.learned(contact, now), now)
        if running.value is not None:
            targets = result.closest[: self.config.k]
            actions += [self._send(c, Store(running.value), now, None) for c in targets]
            actions.append(Published(running.value.key, targets))
        elif result.value is not None and result.cache_at is not None and self.config.cache_found_values:
            actions.append(self._send(result.cache_at, Store(result.value), now, None))
        return actions + joined

    def _rejoin(self, now: float) -> list[Action]:
        if len(self.table) or not self.fleet:
            self.rejoin.due_at = float("inf")  # someone reached us meanwhile: nothing to do
            return []
        self.counters["rejoins"] += 1
        attempt = self.rejoin.attempts + 1
        log.info("joining through %d fleet nodes again (attempt %d)", len(self.fleet), attempt)
        return self.lookup(self.own.address, now, seeds=self.fleet, purpose="rejoin")[1]

    def _joined(self, lookup_id: int, purpose: str, result: LookupResult, now: float) -> list[Action]:
        outcome = self.rejoin.finished(lookup_id, len(self.table), now)
        if outcome == RETRY and self.fleet:
            log.warning(
                "a join through %d fleet nodes left the routing table empty; next attempt in %.1f s",
                len(self.fleet),
                self.rejoin.due_at - now,
            )
        elif outcome == REJOINED and purpose == "rejoin":
            log.info("joined the network: %d contacts in the routing table", len(self.table))
            return self.refresh_beyond_nearest(now, result.closest)[1]
        return []

    def _publish_lookup(self, value: Value, now: float, purpose: str) -> list[Action]:
        lookup_id, actions = self.lookup(value.key, now, purpose=purpose)
        running = self._lookups.get(lookup_id)
        if running is not None:
            running.value = value
            return actions
        # Finished at once (nobody to ask): nothing to store anywhere but here.
        return [*actions, Published(value.key, [])]
