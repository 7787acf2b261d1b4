"""The node-level DHT machine: it ties the routing table, the lookups, the value store and the
timers together. Events in, actions out, time an argument (h11 style); no I/O.

Inputs (each returns the actions it causes):
- `on_request(sender, request, now)`: a peer's PING / STORE / FIND_NODE / FIND_VALUE over a link
  whose peer hello proved `sender` (SPEC 4), so the sender is verified; returns the answer too;
- `on_answer(request_id, answer, now)` and `on_failure(request_id, now)` (reset, error answer,
  closed link) for requests this node sent;
- `tick(now)`: soft and hard timeouts, expiry, refresh and republish, and the rejoin through
  the fleet when the table has emptied (`rejoin`); call it at `next_deadline()` (or earlier:
  it does only what is due);
- `lookup`, `join`, `refresh_beyond_nearest`, `publish`: work asked by the rest of the node.

This module holds the events from the network, the open requests and their timers; the lookups
(that work, and the start, driving and end of every lookup) are the mixin `NodeLookups` of
chrnode.dht.node_lookups, which `DhtNode` extends.

Actions: `Send` (a request to send, with the id its answer must carry back), `LookupDone` (a
finished lookup and why it ran), `Published` (the nodes a value was sent to).

Timeouts: every request has a hard timeout (`hard_timeout`) after which it failed; a lookup's
query also has a soft timeout from the RTT estimator (SPEC 6, see `lookup`), which frees its
slot in the lookup, and `abandon_factor` times that after sending, it leaves the lookup's
window; the request stays open until its answer or its hard timeout.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from chrnode.dht.actions import Action, DhtConfig, LookupDone, Published, Send
from chrnode.dht.ids import Contact
from chrnode.dht.lookup import Lookup
from chrnode.dht.maintenance import Maintenance
from chrnode.dht.messages import Answer, FindValue, Found, Nodes, Ping, Pong, Refused, Request, Store, Stored
from chrnode.dht.node_lookups import LookupFactory, NodeLookups
from chrnode.dht.paced import PacedRefreshes
from chrnode.dht.rejoin import Rejoin
from chrnode.dht.routing import Probe, RoutingTable
from chrnode.dht.rtt import RttTable
from chrnode.dht.store import STORED, ValueStore

__all__ = ["Action", "DhtConfig", "DhtNode", "LookupDone", "Published", "Send"]

log = logging.getLogger("chrnode.dht")

_SOFT, _ABANDON, _HARD = 0, 1, 2  # timer kinds, in the order they fire
_BRING_FORWARD = 0.75  # see `_observe`


@dataclass
class _Outstanding:
    contact: Contact
    request: Request
    sent_at: float
    lookup_id: int | None
    soft_at: float | None = None  # a lookup query's soft deadline until it fires


class DhtNode(NodeLookups):
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
        self.fleet = []  # the seeds of `join`, joined through again when the table empties
        self.rejoin = Rejoin(config.rejoin_initial, config.rejoin_max, self.rng)
        self._outstanding: dict[int, _Outstanding] = {}
        self._lookups = {}
        self._timers: list[tuple[float, int, int]] = []  # (deadline, request id, kind)
        self._next_request = 1
        self._next_lookup = 1
        self._soft_basis = float("inf")  # the network timeout of the last soft deadline pass
        self._paced = PacedRefreshes(config.refreshes_in_flight)  # the join's refreshes
        self._pacing = False
        self.counters: Counter[str] = Counter()  # for metrics and health (see `stats`)

    # -- events from the network ---------------------------------------------------------------

    def on_request(self, sender: Contact, request: Request, now: float) -> tuple[Answer, list[Action]]:
        self.counters["requests_served"] += 1
        actions = self._probes(self.table.heard_from(sender, now), now)
        if isinstance(request, Ping):
            return Pong(now), actions
        if isinstance(request, Store):
            status = self.store.put(request.value, now)
            if status == STORED:
                return Stored(), actions
            self.counters["stores_refused"] += 1
            return Refused(status, _REFUSALS[status]), actions
        if isinstance(request, FindValue):
            value = self.store.get(request.key, now)
            if value is not None:
                return Found(value), actions
            target = request.key
        else:
            target = request.target
        # A contact without its node object (a fleet node not yet met) cannot be passed on.
        nearest = self.table.closest(target, self.config.k + 1)
        passable = [c for c in nearest if c != sender and c.record is not None]
        return Nodes(passable[: self.config.k]), actions

    def on_answer(
        self, request_id: int, answer: Answer, now: float, *, sender: Contact | None = None
    ) -> list[Action]:
        """`sender`: the contact the link's peer hello proved, with its node object; it
        replaces what we knew (a fleet node from config has no record until its hello)."""
        sent = self._outstanding.pop(request_id, None)
        if sent is None:
            return []  # late (after its hard timeout) or never ours
        if isinstance(answer, Refused):
            return self._failed(request_id, sent, now)
        self._observe(sent.contact.address, now - sent.sent_at)
        if sender is not None and sender.address == sent.contact.address:
            sent.contact = sender
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
            _, request_id, kind = heapq.heappop(self._timers)
            sent = self._outstanding.get(request_id)
            if sent is None:
                continue
            if kind == _HARD:
                del self._outstanding[request_id]
                actions += self._failed(request_id, sent, now)
                continue
            running = self._lookups.get(sent.lookup_id) if sent.lookup_id is not None else None
            if running is None or sent.lookup_id is None:
                continue
            if kind == _ABANDON:
                queries = running.machine.abandon(sent.contact.address)
            elif sent.soft_at is not None and sent.soft_at <= now:
                sent.soft_at = None
                abandon_at = sent.sent_at + (now - sent.sent_at) * self.config.abandon_factor
                heapq.heappush(self._timers, (abandon_at, request_id, _ABANDON))
                queries = running.machine.soft_timeout(sent.contact.address)
            else:
                continue  # a soft deadline that was brought forward and has fired already
            actions += self._drive(sent.lookup_id, running, queries, now)
        for value in self.store.expire(now):
            log.debug("value %s (seq %d) expired", value.key.hex(), value.seq)
        if now >= self.maintenance.next_run:
            work = self.maintenance.run(now, self.table, self.store, self.rng)
            for target in work.refresh:
                actions += self.lookup(target, now, purpose="refresh")[1]
            for value in work.republish:
                actions += self._publish_lookup(value, now, "republish")
        if self.rejoin.due(now):
            actions += self._rejoin(now)
        return actions

    def next_deadline(self) -> float:
        while self._timers and self._timers[0][1] not in self._outstanding:
            heapq.heappop(self._timers)  # the request was answered or failed: its timers are moot
        deadlines = [self.maintenance.next_run]
        if self._timers:
            deadlines.append(self._timers[0][0])
        expiry = self.store.next_expiry()
        if expiry is not None:
            deadlines.append(expiry)
        if self.rejoin.running is None:
            deadlines.append(self.rejoin.due_at)
        return min(deadlines)

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    @property
    def running_lookups(self) -> int:
        return len(self._lookups)

    def stats(self) -> dict[str, float]:
        """Figures for /metrics, `network_stats` and the network health layer."""
        srtt = self.rtt.network.srtt
        return {
            "contacts": len(self.table),
            "buckets": len(self.table.bucket_contents()),
            "pending_contacts": len(self.table.pending()),
            "values": len(self.store),
            "requests_outstanding": len(self._outstanding),
            "lookups_running": len(self._lookups),
            "rtt_srtt_seconds": srtt if srtt is not None else 0.0,
            "rtt_timeout_seconds": self.rtt.network.timeout(),
            **{name: float(count) for name, count in sorted(self.counters.items())},
        }

    # -- internals -----------------------------------------------------------------------------

    def _send(self, contact: Contact, request: Request, now: float, lookup_id: int | None) -> Send:
        request_id, self._next_request = self._next_request, self._next_request + 1
        self.counters["requests_sent"] += 1
        self._outstanding[request_id] = _Outstanding(contact, request, now, lookup_id)
        heapq.heappush(self._timers, (now + self.config.hard_timeout, request_id, _HARD))
        if lookup_id is not None:
            sent = self._outstanding[request_id]
            sent.soft_at = now + min(self.rtt.timeout(contact.address), self.config.hard_timeout)
            heapq.heappush(self._timers, (sent.soft_at, request_id, _SOFT))
        return Send(request_id, contact, request)

    def _detach(self, request_ids: Iterable[int]) -> None:
        for request_id in request_ids:
            sent = self._outstanding.get(request_id)
            if sent is not None:
                sent.lookup_id = None

    def observe_rtt(self, address: bytes, rtt: float) -> None:
        """A round trip measured outside the DHT (a link's health ping, the peer hello)."""
        self._observe(address, rtt)

    def _observe(self, address: bytes, rtt: float) -> None:
        """Feed the estimator, and bring forward the soft deadlines set from an older estimate:
        a node's first queries are timed by `rtt_initial` until an answer has been measured.

        The pass over the open requests runs only when the network's timeout has fallen to
        `_BRING_FORWARD` of the highest it was since the last pass (the first answer always): an
        answer otherwise cost a pass over every open request (16 lookups in flight: 50 of them,
        a fifth of the node's DHT CPU in bench_loop_lag), which almost never moved a deadline."""
        self.rtt.sample(address, rtt)
        network = self.rtt.network.timeout()
        if network > self._soft_basis:
            self._soft_basis = network
        if network >= self._soft_basis * _BRING_FORWARD:
            return
        self._soft_basis = network
        for request_id, sent in self._outstanding.items():
            if sent.soft_at is not None:
                soft_at = sent.sent_at + self.rtt.timeout(sent.contact.address)
                if soft_at < sent.soft_at:
                    sent.soft_at = soft_at
                    heapq.heappush(self._timers, (soft_at, request_id, _SOFT))

    def _probes(self, probes: list[Probe], now: float) -> list[Action]:
        self.counters["probes_sent"] += len(probes)  # PINGs of table upkeep, not of a lookup
        return [self._send(p.contact, Ping(), now, None) for p in probes]

    def _failed(self, request_id: int, sent: _Outstanding, now: float) -> list[Action]:
        self.counters["requests_failed"] += 1
        actions = self._probes(self.table.failed(sent.contact.address, now), now)
        if self.fleet and not len(self.table) and self.rejoin.running is None:
            if self.rejoin.due_at == float("inf"):
                log.warning("the routing table is empty (every contact failed): joining the fleet again")
            self.rejoin.emptied(now)
        if sent.lookup_id is None or sent.lookup_id not in self._lookups:
            return actions
        running = self._lookups[sent.lookup_id]
        running.requests.discard(request_id)
        queries = running.machine.failed(sent.contact.address)
        return actions + self._drive(sent.lookup_id, running, queries, now)


_REFUSALS = {
    "stale": "a newer object (higher seq) is held for this key",
    "expired": "the object's `expires` has passed",
    "rate_limited": "this node holds as many objects as it may; try another node or later",
}
