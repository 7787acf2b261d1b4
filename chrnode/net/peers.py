"""The peer side of the network process: the peer port, one link per peer (SPEC 4).

:class:`PeerNetwork` is the LinkHost of chrnode.peer.link and the adapter of Connection.Pool's
decisions (chrnode.peer.pool): it listens on the peer port, dials peers on demand (a DHT request,
a relay, a bootstrap node), reuses the one link it has to a peer, pings idle links, redials the
pinned bootstrap nodes with backoff and persists what it learns through ``on_seen`` (peer_history).
Requests arriving on any link go to the handler registered for their type.

It owns the two sides of its links: the peer port (the listener and the admission of inbound
connections until their peer hello) is chrnode.net.peer_port's :class:`PeerPort`; the dialling
(``connect()``, the pool's dials, the connect()s waiting for a dial slot) is chrnode.net.dialer's
:class:`Dialer`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chrnode.crypto import PrivateKey
from chrnode.edge import codes
from chrnode.edge.admission import AdmissionLimits
from chrnode.edge.tlslisten import TlsListener
from chrnode.net.dialer import Dialer
from chrnode.net.peer_port import PeerPort
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm
from chrnode.peer.budget import LoopBudget
from chrnode.peer.link import LinkConfig, PeerLink
from chrnode.peer.link_send import PeerError
from chrnode.peer.pool import Close, Dial, Ping, Pool, PoolConfig, Seen
from chrnode.peer.twins import Change, Twins

__all__ = ["PeerNetwork", "PeerNetworkConfig"]

_log = logging.getLogger("chrnode.peer")

Handler = Callable[[PeerLink, Any, "int | None"], None]


class RelayHandler(Protocol):
    """Where a link's port data and port flow control go (chrnode.net.relay)."""

    def relay_frame(self, link: PeerLink, ref: int, frame: bytearray | memoryview) -> None: ...

    def port_flow(self, link: PeerLink, ref: int, paused: bool) -> None: ...

    def port_credit(self, link: PeerLink, ref: int, nbytes: int) -> None: ...


@dataclass(frozen=True, slots=True)
class PeerNetworkConfig:
    link: LinkConfig = field(default_factory=LinkConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    handshake_timeout: float = 5.0
    # A dial's deadline from TCP connect to the peer's hello answer: a contact that never
    # answers holds one of the pool's dial slots (PoolConfig.max_dials) this long, never a link.
    dial_timeout: float = 5.0
    accepts_per_second_per_ip: float = 20.0  # new inbound links per source address
    tick_interval: float = 1.0
    # Admission (chrnode.edge.admission): inbound connections at once, in all, per source address
    # and per /24 (0 = no such cap; the daemon sets them from its config), and seconds from TCP
    # accept to a proven peer hello.
    max_connections: int = 1024
    conns_per_ip: int = 0
    conns_per_subnet: int = 0
    admission_deadline: float = 10.0


class PeerNetwork:
    """All peer links of one node, on one event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        key: PrivateKey,
        own_record: Callable[[], SignedObject],
        server_ctx: ssl.SSLContext,
        client_ctx: ssl.SSLContext,
        config: PeerNetworkConfig | None = None,
    ) -> None:
        self.loop = loop
        self.key = key
        self._own_record = own_record
        self.config = config = config or PeerNetworkConfig()
        self.pool = Pool(config.pool)
        self.links: dict[bytes, PeerLink] = {}
        self.work = LoopBudget(loop)  # requests and answers of every link, bounded per iteration
        self.handlers: dict[int, Handler] = {}
        self.on_link_up: list[Callable[[PeerLink], None]] = []
        self.on_link_down: list[Callable[[PeerLink], None]] = []
        self.on_seen: Callable[[bytes, bool, float], None] | None = None
        self.relay: RelayHandler | None = None  # the cross-node ports (chrnode.net.relay)
        self.twins: Twins[PeerLink] = Twins(key.address, config.link.hello_timeout * 2)
        self.last_rtt: dict[bytes, float] = {}
        self._every: weakref.WeakSet[PeerLink] = weakref.WeakSet()  # proven or not, for close()
        self._ticker: asyncio.TimerHandle | None = None
        self._closing = False
        self.peer_port = PeerPort(  # the inbound side: the listener, admission (chrnode.net.peer_port)
            self,
            server_ctx=server_ctx,
            link_config=config.link,
            handshake_timeout=config.handshake_timeout,
            accepts_per_second=config.accepts_per_second_per_ip,
            limits=AdmissionLimits(
                max_connections=config.max_connections,
                per_address=config.conns_per_ip,
                per_subnet=config.conns_per_subnet,
                pending_timeout=config.admission_deadline,
            ),
            track=self._every.add,
        )
        self.admission = self.peer_port.admission  # told here when a link is proven or closed
        self.dialer = Dialer(  # the outbound side: connect(), the pool's dials (chrnode.net.dialer)
            self,
            self.pool,
            self.twins,
            self.links,
            client_ctx=client_ctx,
            link_config=config.link,
            timeout=config.dial_timeout,
            act=self._act,
            track=self._every.add,
        )
        self.links_opened = 0  # links that came up, either way

    # ---- LinkHost ---------------------------------------------------------------------------
    def own_record(self) -> SignedObject:
        return self._own_record()

    def link_up(self, link: PeerLink) -> None:
        assert link.node is not None
        node = link.node
        self.admission.authenticated(link)  # proven: no deadline, never shed (a no-op if dialled)
        now = self.loop.time()
        existing = self.twins.link(node)
        if existing is not None and not existing.closed:
            # A second link to this peer (both dialled at once): chrnode.peer.twins chooses; the
            # pool's state (up) holds for whichever is kept.
            closing = existing.conn is None or existing.conn.is_closing
            self._apply(node, self.twins.up(node, link, link.dialer, now, existing_closing=closing))
            return
        if link.dialer:
            actions = self.pool.dialed(node, now)
        else:
            host, port = self._endpoint(link)
            actions = self.pool.inbound(node, host, port, now)
        if any(isinstance(a, Close) and a.address == node for a in actions):
            reason = next(a.reason for a in actions if isinstance(a, Close) and a.address == node)
            _log.info("closing %s: %s", link.label(), reason)
            link.close()
            self._act([a for a in actions if not (isinstance(a, Close) and a.address == node)])
            if link.dialer:
                self.dialer.over(node, PeerError(f"no link to 0x{node.hex()}: {reason}", codes.UNAVAILABLE))
            return
        self.links_opened += 1
        _log.info("%s link up with %s", "outbound" if link.dialer else "inbound", link.label())
        self._act(actions)
        self._apply(node, self.twins.up(node, link, link.dialer, now))

    def _apply(self, node: bytes, change: Change[PeerLink]) -> None:
        """The twins' choice: the peer's link now, the duplicates closed, a waiting dial given the
        link once the choice is settled."""
        for dup in change.close:
            _log.info("closing %s: duplicate link (the other one is kept)", dup.label())
            if self.links.get(node) is dup:
                del self.links[node]
                for callback in self.on_link_down:
                    callback(dup)
            dup.close()
        if change.became and change.link is not None:
            _log.debug("keeping %s", change.link.label())
            old = self.links.get(node)
            self.links[node] = change.link
            if old is not None and old is not change.link:
                for callback in self.on_link_down:
                    callback(old)
            for callback in self.on_link_up:
                callback(change.link)
        if change.settled and change.link is not None:
            self.dialer.settled(node, change.link)

    def link_down(self, link: PeerLink) -> None:
        self.admission.closed(link)
        if link.node is None:
            return
        node = link.node
        was = self.links.get(node) is link
        change = self.twins.down(node, link)
        if not was:  # a duplicate, or the second link while the decider chose: a dial may settle
            self._apply(node, change)
            return
        if change.link is not None:  # the decider closed the first: the second is kept
            del self.links[node]
            _log.info("link down with %s; %s is kept", link.label(), change.link.label())
            for callback in self.on_link_down:
                callback(link)
            self._apply(node, change)
            return
        del self.links[node]
        _log.info("link down with %s", link.label())
        self._act(self.pool.closed(node, self.loop.time()))
        for callback in self.on_link_down:
            callback(link)

    def peer_request(self, link: PeerLink, msg: Any, request_id: int | None) -> None:
        assert link.node is not None
        self.pool.activity(link.node, self.loop.time())
        msg_type, _ = pm.to_fields(msg)
        handler = self.handlers.get(msg_type)
        if handler is None:
            link.error(msg_type, request_id, codes.UNAVAILABLE, "this node does not serve that request yet")
            return
        handler(link, msg, request_id)

    def relay_frame(self, link: PeerLink, ref: int, frame: bytearray | memoryview) -> None:
        if self.relay is not None:
            self.relay.relay_frame(link, ref, frame)

    def port_flow(self, link: PeerLink, ref: int, paused: bool) -> None:
        if self.relay is not None:
            self.relay.port_flow(link, ref, paused)

    def port_credit(self, link: PeerLink, ref: int, nbytes: int) -> None:
        if self.relay is not None:
            self.relay.port_credit(link, ref, nbytes)

    # ---- listening (chrnode.net.peer_port) --------------------------------------------------------
    def listen(self, host: str, port: int) -> int:
        bound = self.peer_port.listen(host, port)
        self._schedule_tick()
        return bound

    @property
    def listener(self) -> TlsListener | None:
        return self.peer_port.listener

    @property
    def refused(self) -> int:
        """Inbound connections refused (the rate of new links per address, or admission)."""
        return self.peer_port.refused

    # ---- dialling (chrnode.net.dialer) ------------------------------------------------------------
    def pin(self, address: bytes, host: str, port: int) -> None:
        """Keep a link to this peer for ever (a fleet bootstrap node), redialled with backoff."""
        self._act(self.pool.want(address, host, port, self.loop.time(), pinned=True))
        self._schedule_tick()

    async def connect(self, address: bytes, host: str, port: int) -> PeerLink:
        """The link to ``address`` (reused, or dialled now); PeerError if it cannot be had."""
        return await self.dialer.connect(address, host, port)

    @property
    def dials(self) -> int:
        """Outbound dials started (each a TLS handshake and a peer hello)."""
        return self.dialer.dials

    # ---- the pool's actions and timer ---------------------------------------------------------
    def _act(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Dial):
                self.dialer.dial(action)
            elif isinstance(action, Ping):
                self._ping(action.address)
            elif isinstance(action, Close):
                # The pool closes the peer, not one link: a second one awaiting the peer's choice
                # (chrnode.peer.twins) goes first, so that it is not taken up in the first's place.
                for link in (self.twins.second(action.address), self.links.get(action.address)):
                    if link is not None:
                        _log.info("closing %s: %s", link.label(), action.reason)
                        link.close()
            elif isinstance(action, Seen) and self.on_seen is not None:
                self.on_seen(action.address, action.connected, action.reliability)

    def _ping(self, address: bytes) -> None:
        link = self.links.get(address)
        if link is None:
            return
        sent = time.monotonic()

        def answered(answer: Any) -> None:
            if isinstance(answer, pm.PeerPingReply):
                self._act(self.pool.answered(address, self.loop.time()))
                self.last_rtt[address] = time.monotonic() - sent

        link.request(pm.PeerPing(), answered, self.config.pool.ping_timeout)

    def _schedule_tick(self) -> None:
        if self._ticker is None and not self._closing:
            self._ticker = self.loop.call_later(self.config.tick_interval, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        now = self.loop.time()
        self.peer_port.tick(now)
        for node, change in self.twins.tick(now).items():
            self._apply(node, change)
        self._act(self.pool.tick(now))
        self._schedule_tick()

    def answered(self, address: bytes) -> None:
        """A request to ``address`` was answered (reliability, liveness)."""
        self._act(self.pool.answered(address, self.loop.time()))

    def failed(self, address: bytes) -> None:
        self._act(self.pool.failed(address))

    # ---- queries and shutdown -------------------------------------------------------------------
    def _endpoint(self, link: PeerLink) -> tuple[str, int]:
        host = link.conn.peername[0] if link.conn is not None else ""
        port = 0
        if link.record is not None:
            port = int(link.record.data.get("peer_port", 0))
            host = str(link.record.data.get("host", host))
        return host, port

    def status(self) -> list[dict[str, Any]]:
        """One row per known peer: state, endpoint, reliability, connections (peer_list)."""
        rows = []
        for peer in self.pool.peers.values():
            rows.append(
                {
                    "address": "0x" + peer.address.hex(),
                    "host": peer.host,
                    "port": peer.port,
                    "state": peer.state.value,
                    "pinned": peer.pinned,
                    "reliability": round(peer.reliability, 3),
                    "connections": peer.connections,
                    "rtt_ms": round(self.last_rtt[peer.address] * 1000, 2)
                    if peer.address in self.last_rtt
                    else None,
                }
            )
        return rows

    async def close(self) -> None:
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self.peer_port.close()
        self.dialer.cancel()
        links = list(self._every)
        for link in links:
            if link.conn is not None:
                link.conn.abort()
        for link in links:
            if link.conn is not None:
                await link.conn.wait_closed()
