"""The peer side of a running node (SPEC 4, 6): peer port, DHT, its own objects, fleet, MERKLE.

    net = NodeNetwork(loop, key, server_ctx, client_ctx, settings, persistence)
    port = net.start(bind, edge_ports)   # listens on the peer port, publishes the node object
    net.restore(objects)                 # what Model.Sql held (read once the actors answer)
    net.device_hello(...); net.device_ticket(...); net.device_left(...)   # from the edge
    net.status()                         # for the snapshot: peers, fleet, p2p
    await net.close()

Runs on the network process's one loop (chrnode.net.server); the listener actor only feeds it
and reports what it says. It composes the parts that exist as pure rules: Connection.Pool
(:class:`PeerNetwork`), the Kademlia machine (:class:`DhtService`), Object.Manager's decisions
(:class:`Publisher`), the object store rules and MERKLE (:class:`MerkleSync`). What must outlive
the process (objects held, peer_history) goes out through :class:`Persistence`, fire and forget:
the network never waits on storage.

Fleet nodes (``fleet_nodes``, SPEC 11) are the bootstrap: pinned in the pool (kept linked,
redialled with backoff), joined through at start and again whenever the routing table empties
(the DHT machine's rule, chrnode.dht.rejoin: with backoff, logged); after a rejoin the node
publishes its node object again, since it reached nobody while the table was empty.
Whenever a link comes up, the node reconciles its objects with that peer through MERKLE, so a
restarted or partitioned node fetches and pushes only what differs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chrnode.config_fields import FleetNode
from chrnode.crypto import PrivateKey
from chrnode.dht import DhtProtocolError
from chrnode.dht.ids import Contact
from chrnode.dht.node import DhtConfig, DhtNode
from chrnode.edge import codes
from chrnode.net.codecs import ObjectCodec, contact_of
from chrnode.net.dht_service import DhtService
from chrnode.net.merkle_sync import HELD, NEW, REFUSED, MerkleSync
from chrnode.net.peers import PeerNetwork, PeerNetworkConfig
from chrnode.objects.errors import ObjectError
from chrnode.objects.kinds import NODE, NodeRecord
from chrnode.objects.publisher import Publisher, PublisherConfig
from chrnode.objects.signed import SignedObject
from chrnode.objects.store import ObjectStore
from chrnode.peer import messages as pm
from chrnode.peer.link import PeerLink
from chrnode.ticket import Ticket

__all__ = ["NetworkSettings", "NodeNetwork", "Persistence"]

_log = logging.getLogger("chrnode.net")

RESTORE_WAIT = 30.0  # seconds a reconciliation waits for the restore from storage


class Persistence(Protocol):
    """Where the network's durable state goes (Model.Sql through the listener actor)."""

    def object_held(self, obj: SignedObject) -> None: ...

    def peer_seen(self, address: bytes, connected: bool, ok: bool | None) -> None: ...


@dataclass(frozen=True)
class NetworkSettings:
    host: str  # announced in the node object (CHR_HOST)
    peer_port: int  # 0: any free port
    chain_id: int
    version: int = 2
    fleet: tuple[FleetNode, ...] = ()
    accept_hello: bool = True  # require_tickets off: a location may carry the hello proof
    dht: DhtConfig = field(default_factory=DhtConfig)
    peers: PeerNetworkConfig = field(default_factory=PeerNetworkConfig)
    publisher: PublisherConfig = field(default_factory=PublisherConfig)
    tick_interval: float = 2.0  # Publisher ticks, expiry


class NodeNetwork:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        key: PrivateKey,
        server_ctx: ssl.SSLContext,
        client_ctx: ssl.SSLContext,
        settings: NetworkSettings,
        persistence: Persistence,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.loop = loop
        self.key = key
        self.settings = settings
        self.persistence = persistence
        self.clock = clock
        self.codec = ObjectCodec(accept_hello=settings.accept_hello)
        self.objects = ObjectStore(accept_hello=settings.accept_hello)
        self.record: SignedObject | None = None
        self.network = PeerNetwork(loop, key, self._own_record, server_ctx, client_ctx, settings.peers)
        self.network.on_seen = self._seen
        self.network.on_link_up.append(self._link_up)
        self.sync = MerkleSync(self.objects, self.codec, self._accept, clock)
        self.network.handlers[pm.MERKLE] = self._merkle
        self.dht: DhtService | None = None
        self.publisher: Publisher | None = None
        self.port = 0
        self.joins = 0
        self.published = 0
        self._restored = asyncio.Event()  # MERKLE waits for it: compare what we really hold
        self._reliability: dict[bytes, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.TimerHandle | None = None
        self._closing = False

    # ---- start ----------------------------------------------------------------------------------
    def restore(self, objects: Iterable[SignedObject]) -> None:
        """Objects held before a restart (checked by the caller's codec), after start; kept, not
        sent. Call it once, with [] when storage could not say: reconciliations wait for it."""
        assert self.dht is not None, "start() first"
        now = self.clock()
        held = 0
        for obj in objects:
            if obj.kind == NODE and obj.key == self.key.address:
                continue  # our own old record: the new one replaces it
            try:
                if self.dht.hold(obj) == "stored":
                    self.objects.offer(obj, now)
                    held += 1
            except (ObjectError, DhtProtocolError, ValueError) as exc:
                _log.debug("restored object 0x%s dropped: %s", obj.key.hex(), exc)
        if held:
            _log.info("restored %d signed objects from storage", held)
        self._restored.set()

    def start(self, bind: str, edge_ports: Iterable[int]) -> int:
        """Listen on the peer port, make and publish the node object, join through the fleet."""
        self.port = self.network.listen(bind, self.settings.peer_port)
        now = self.clock()
        s = self.settings
        mine = NodeRecord(self.key.address, s.host, tuple(edge_ports), self.port, s.version, s.chain_id)
        self.publisher = Publisher(self.key, mine, s.publisher)
        first = self.publisher.start(now)[0].object
        self.record = first
        node = DhtNode(contact_of(first), config=s.dht, rng=random.Random(), now=now)
        self.network.pool.rng = random.Random()
        self.dht = DhtService(self.network, node, self.codec, clock=self.clock)
        self.dht.on_stored.append(self._stored)
        self.dht.on_rejoined.append(self._rejoined)
        self._offer_own(first)
        for seed in self._seeds():
            self.network.pin(seed.address, seed.host, seed.peer_port)
        self._spawn(self._bootstrap(first))
        self._schedule_tick()
        _log.info("peer port %d; node object published as %s:%d", self.port, s.host, self.port)
        return self.port

    def _seeds(self) -> list[Contact]:
        out = []
        for node in self.settings.fleet:
            address = bytes.fromhex(node.address[2:])
            if address != self.key.address:
                out.append(Contact(address, node.host, node.port))
        return out

    async def _bootstrap(self, first: SignedObject) -> None:
        if self._seeds():
            await self._join()
        await self._publish(first)

    async def _join(self) -> None:
        assert self.dht is not None
        self.joins += 1
        result = await self.dht.join(self._seeds())
        _log.info(
            "joined through the fleet: %s, %d in the routing table",
            "ok" if result.ok else "no answer",
            len(self.dht.node.table),
        )

    # ---- our own objects ---------------------------------------------------------------------------
    def _own_record(self) -> SignedObject:
        assert self.record is not None, "the node object is made before the peer port accepts"
        return self.record

    def _offer_own(self, obj: SignedObject) -> None:
        try:
            self.objects.offer(obj, self.clock())
        except ObjectError as exc:  # our own object: a bug, not a peer's fault
            _log.error("this node's own %s object was refused: %s", obj.kind, exc)
            return
        self.persistence.object_held(obj)

    async def _publish(self, obj: SignedObject) -> None:
        assert self.dht is not None
        try:
            sent_to = await self.dht.publish(obj)
        except DhtProtocolError as exc:
            _log.error("publishing this node's %s object failed: %s", obj.kind, exc)
            return
        self.published += 1
        _log.debug("%s object 0x%s stored at %d nodes", obj.kind, obj.key.hex(), len(sent_to))

    def _emit(self, publishes: Iterable[Any]) -> None:
        for publish in publishes:
            obj = publish.object
            if obj.kind == NODE:
                self.record = obj
            self._offer_own(obj)
            self._spawn(self._publish(obj))

    def device_hello(self, device: bytes, binding: bytes, device_sig: bytes) -> None:
        """A device proved its hello; where tickets are not required its location is published."""
        if self.publisher is not None and self.settings.accept_hello:
            self._emit(self.publisher.hello(device, binding, device_sig, self.clock()))

    def device_ticket(self, device: bytes, ticket: Ticket) -> None:
        """A valid ticket of ``device`` naming this node was accepted (SPEC 5)."""
        if self.publisher is not None:
            self._emit(self.publisher.ticket(device, ticket, self.clock()))

    def device_left(self, device: bytes) -> None:
        """The device's session ended: its location is no longer republished and lapses."""
        if self.publisher is not None:
            self.publisher.left(device)

    # ---- what arrives ---------------------------------------------------------------------------------
    def _stored(self, obj: SignedObject) -> None:
        """A peer's STORE was accepted by the DHT's rules."""
        try:
            if self.objects.offer(obj, self.clock()):
                self.persistence.object_held(obj)
        except ObjectError:
            pass  # an equal seq the DHT took as a refresh; the held one stays

    def _accept(self, obj: SignedObject) -> str:
        """An object fetched in a MERKLE sync: the same rules as a STORE (merkle_sync NEW...)."""
        assert self.dht is not None
        held = self.objects.get(obj.key, self.clock())
        if held is not None and held.seq == obj.seq and held.signature == obj.signature:
            return HELD
        try:
            status = self.dht.hold(obj)
            if status != "stored":
                _log.info("object 0x%s from MERKLE refused: %s", obj.key.hex(), status)
                return REFUSED
            self.objects.offer(obj, self.clock())
        except (ObjectError, DhtProtocolError) as exc:
            _log.info("object 0x%s from MERKLE refused: %s", obj.key.hex(), exc)
            return REFUSED
        self.persistence.object_held(obj)
        return NEW

    def _link_up(self, link: PeerLink) -> None:
        if not self._closing:
            self._spawn(self._reconcile(link))

    def _merkle(self, link: PeerLink, msg: Any, request_id: int | None) -> None:
        # Until the restore, the store lacks what the database holds: a peer comparing now would
        # push it all again. It is told to wait; our own reconciliation after the restore
        # exchanges both ways.
        if not self._restored.is_set():
            link.error(pm.MERKLE, request_id, codes.UNAVAILABLE, "restoring objects from storage; ask later")
            return
        self.sync.answer(link, msg, request_id)

    async def _reconcile(self, link: PeerLink) -> None:
        try:
            await asyncio.wait_for(self._restored.wait(), RESTORE_WAIT)
        except TimeoutError:
            _log.warning("reconciling with %s before storage restored the objects", link.label())
        await self.sync.reconcile(link)

    def _seen(self, address: bytes, connected: bool, reliability: float) -> None:
        # The pool says how reliable the peer is now; peer_history keeps its own moving score,
        # moved by whether this change was up (answered) or down (failed).
        before = self._reliability.get(address)
        self._reliability[address] = reliability
        ok = None if connected or before is None else reliability >= before
        self.persistence.peer_seen(address, connected, ok)

    # ---- lookups for the edge (getnode, getobject) ------------------------------------------------
    async def find(self, key: bytes) -> SignedObject | None:
        """The live object for ``key``: held here, else looked up in the DHT."""
        held = self.objects.get(key, self.clock())
        if held is not None or self.dht is None:
            return held
        return await self.dht.find_value(key)

    # ---- timer ---------------------------------------------------------------------------------------
    def _schedule_tick(self) -> None:
        if not self._closing:
            self._ticker = self.loop.call_later(self.settings.tick_interval, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        now = self.clock()
        if self.publisher is not None:
            self._emit(self.publisher.tick(now))
        self.objects.expire(now)
        self._schedule_tick()

    def _rejoined(self, result: Any) -> None:
        self.joins += 1
        if self.record is not None and not self._closing:
            self._spawn(self._publish(self.record))  # it reached nobody while the table was empty

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("network task failed", exc_info=task.exception())

    # ---- status ---------------------------------------------------------------------------------------
    def peer_rows(self) -> list[dict[str, Any]]:
        """peer_list rows (docs/rpc.md: node_id, host, port, state connected|known, ...)."""
        rows = []
        for row in self.network.status():
            link = row.pop("state")
            rows.append({"node_id": row["address"], "state": "connected" if link == "up" else "known",
                         "link": link, **row})  # fmt: skip
        return rows

    def fleet_status(self) -> dict[str, Any]:
        seeds = self._seeds()
        up = [s for s in seeds if self.network.pool.is_up(s.address)]
        return {
            "configured": bool(self.settings.fleet),
            "connected": bool(up),
            "seed_nodes": [f"0x{s.address.hex()}@{s.host}:{s.peer_port}" for s in seeds],
            "connected_nodes": len(up),
            "error": "" if up or not seeds else "no fleet node linked yet",
        }

    def p2p_status(self) -> dict[str, Any]:
        dht = self.dht.status() if self.dht is not None else {}
        counters = dict(self.dht.node.counters) if self.dht is not None else {}
        return {
            "peer_port": self.port,
            "links": len(self.network.links),
            "known": len(self.network.pool.peers),
            "inbound_refused": self.network.refused,
            "admission": self.network.admission.counters(),
            "objects": len(self.objects),
            "joins": self.joins,
            "published": self.published,
            "serving_locations": len(self.publisher.serving()) if self.publisher is not None else 0,
            "dht": {**dht, "counters": counters},
            "merkle": {**self.sync.totals, "recent": [r.summary() for r in self.sync.recent]},
        }

    async def close(self) -> None:
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
        if self.dht is not None:
            self.dht.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.network.close()
