"""The EdgeV2 device port server (SPEC 3, 4, 5): listeners, sessions by device, limits, timers.

    server = EdgeServer(config, node_key, ssl_context, hooks)
    ports = await server.start()      # the bound ports (config may say 0)
    ...
    server.snapshot()                 # connections, devices, ports, bytes, errors by code
    await server.stop()

It runs on the loop of a :class:`chrnode.net.server.NetworkServer` (its own one unless given; the
listener actor runs that loop in a thread), whose listeners it asks for, and never blocks it. It
implements the small host interfaces of its sessions (SessionHost) and handlers (HandlerHost),
which import neither it nor each other's upper layers.
One sweep task enforces every deadline (hello, idle, tickets) by scanning the sessions, so an idle
connection costs no timer; it, the epoch refresh, the pruning, the report loop and ``snapshot()``
are the server's upkeep, its base class ServerUpkeep in chrnode.edge.server_upkeep.
Limits: ``max_connections`` (refused with a `busy` notify, or at TCP level well beyond the limit),
new connections per source IP and frames per device (token buckets).
Admission (chrnode.edge.admission) caps connections per address and per subnet, cuts those that
have not proved a device within ``handshake_deadline`` of the accept, and under pressure sheds the
oldest of those first; this module only carries its decisions out.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import msgpack

from chrnode.config import Config
from chrnode.crypto import PrivateKey, keccak256, parse_address
from chrnode.edge import codes
from chrnode.edge.admission import TOTAL, Admission, AdmissionLimits, Refuse
from chrnode.edge.channel_hub import ChannelHub
from chrnode.edge.channels import Limits
from chrnode.edge.frame import VERSION
from chrnode.edge.handlers import Handlers
from chrnode.edge.hooks import DefaultHooks, DevicePresence, EdgeHooks
from chrnode.edge.messages import Message
from chrnode.edge.ports import DeviceResolver, PortEnd, PortTable
from chrnode.edge.ratelimit import KeyedBuckets
from chrnode.edge.server_upkeep import ServerUpkeep
from chrnode.edge.session import Session
from chrnode.edge.tlslisten import TlsListener
from chrnode.edge.usage import DeviceAccount, TicketDesk
from chrnode.errors import ChrError, CryptoError
from chrnode.net.server import NetworkServer

__all__ = ["EdgeServer"]

_log = logging.getLogger("chrnode.edge")

PRESSURE_LOG_INTERVAL = 60.0  # at most one log line about shed/refused connections per this
STOP_GRACE = 2.0  # seconds for sessions to flush their goodbye on stop()
SERVICE = "edge2"  # the name of the device port listeners in the network server
# Connections that have not sent their first byte wait in the kernel's queue (TCP_DEFER_ACCEPT)
# and count against the backlog: a deep one keeps a slowloris from crowding out honest SYNs.
# The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 8192


class EdgeServer(ServerUpkeep):
    """Serves devices on ``config.edge2_ports``; see the module docstring."""

    def __init__(
        self,
        config: Config,
        node_key: PrivateKey,
        ssl_context: ssl.SSLContext,
        hooks: EdgeHooks | None = None,
        network: NetworkServer | None = None,
        resolver: DeviceResolver | None = None,
    ) -> None:
        self.config = config
        self.network = network if network is not None else NetworkServer()
        self._owns_network = network is None
        self.resolver = resolver  # finds devices not connected here (the network; issue 10)
        self.presence: DevicePresence | None = None  # told who is served here (location objects)
        self.node_key = node_key
        self.node_address = node_key.address
        # Renegotiation would change tls-unique under the hello proof (SPEC 3).
        ssl_context.options |= ssl.OP_NO_RENEGOTIATION
        self.ssl_context = ssl_context
        self.hooks: EdgeHooks = hooks if hooks is not None else DefaultHooks(config.epoch_length)
        self.fleet = _fleet_address(config.fleet_contract)
        self.epoch = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ports = PortTable(config.connection_timeout, self.count_error)
        self.channels = ChannelHub(
            self.ports,
            lambda: self.loop,
            lambda end: isinstance(end, Session),  # a channel lives on its target's node
            Limits(config.channel_max_members, config.channel_max_lag, config.channel_slow_timeout),
            self.count_error,
        )
        self.desk = TicketDesk(self.node_address, config.chain_id, self.hooks, config.max_ticket_jump)
        self.handlers = Handlers(self)
        self.sessions: set[Session] = set()
        self.devices: dict[bytes, Session] = {}
        self.accounts: dict[bytes, DeviceAccount] = {}
        self.errors: Counter[str] = Counter()
        self.tickets_accepted = 0
        self._conn_buckets = KeyedBuckets(config.conn_rate_per_ip, max(2 * config.conn_rate_per_ip, 4.0))
        self._notice_buckets = KeyedBuckets(config.conn_rate_per_ip, max(config.conn_rate_per_ip, 2.0))
        self.admission: Admission[Session] = Admission(
            AdmissionLimits(
                max_connections=config.max_connections,
                per_address=config.max_conns_per_ip,
                per_subnet=config.max_conns_per_subnet,
                pending_timeout=config.handshake_deadline,
            )
        )
        self._listeners: list[TlsListener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed_bytes_in = 0
        self._closed_bytes_out = 0
        self._started_at = 0.0
        self._stopping = False

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> list[int]:
        """Bind every edge port and start serving; returns the bound port numbers."""
        await self.network.start()
        self._loop = self.network.loop
        self._started_at = time.time()
        self.epoch = await self.hooks.current_epoch()
        try:
            for port in self.config.edge2_ports:
                self._listeners.append(
                    self.network.listen(
                        SERVICE,
                        self.config.bind_address,
                        port,
                        self.ssl_context,
                        self._new_session,
                        self.config.connection_timeout,
                        backlog=LISTEN_BACKLOG,
                        defer_accept=self.config.handshake_deadline,
                    )
                )
                self._listeners[-1].on_failed = self._handshake_failed  # every edge port, not the last
                self._listeners[-1].on_spoke = self.admission.progressed  # type: ignore[assignment]
        except OSError as exc:
            self.network.close_listeners(SERVICE)
            self._listeners.clear()
            raise ChrError(f"cannot listen on {self.config.bind_address}:{port} for devices: {exc}") from exc
        self.spawn(self._sweep())
        self.spawn(self._report_loop())
        ports = [listener.port for listener in self._listeners]
        _log.info("edge server of node 0x%s listening on %s", self.node_address.hex(), ports)
        return ports

    async def stop(self) -> None:
        """Stop listening, say goodbye to every device (notify shutting_down) and close."""
        if self._loop is None or self._stopping:
            return
        self._stopping = True
        self.network.close_listeners(SERVICE)
        for session in list(self.sessions):
            session.close_with(
                codes.SHUTTING_DOWN, "the node is stopping; reconnect later or elsewhere", "info"
            )
        deadline = self.loop.time() + STOP_GRACE
        while self.sessions and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for session in list(self.sessions):
            if session.conn is not None:
                session.conn.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.hooks.report(self.snapshot())
        except Exception:
            _log.exception("final edge report failed")
        if self._owns_network:
            await self.network.stop()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the server runs on (set by start())."""
        if self._loop is None:
            raise ChrError("the edge server is not started")
        return self._loop

    @property
    def bound_ports(self) -> list[int]:
        return [listener.port for listener in self._listeners]

    # ---- sessions ---------------------------------------------------------------------------

    def _new_session(self, addr: tuple[str, int]) -> Session | None:
        """A protocol for a new TCP connection, or None to drop it before TLS.

        Every connection that gets a protocol goes through admission (so it has a deadline and
        can be shed), except the `busy` notices sent when the node is full of devices, which are
        bounded by a margin over max_connections."""
        ip = addr[0]
        if self._stopping:
            return None
        refusal: tuple[str, str] | None = None
        if self.config.rate_limiting and not self._conn_buckets.take(ip):
            if not self._notice_buckets.take(ip):
                self.count_error(codes.RATE_LIMITED)
                return None
            rate = self.config.conn_rate_per_ip
            refusal = (codes.RATE_LIMITED, f"more than {rate:g} new connections per second from this address")
        session = Session(self, ip, refusal)
        decision = self.admission.accept(session, ip, self.loop.time())
        if isinstance(decision, Refuse):
            self._log_pressure()
            limit = self.config.max_connections
            if decision.cap == TOTAL and refusal is None and self._unadmitted() < max(16, limit // 10):
                return Session(self, ip, (codes.BUSY, f"this node is at its limit of {limit} connections"))
            self.count_error(codes.BUSY)
            return None  # not even a TLS handshake
        for victim in decision.shed:
            self._cut(victim, codes.BUSY, "the node is full and this connection had not said hello; closed")
        if decision.shed:
            self._log_pressure()
        return session

    def _unadmitted(self) -> int:
        """Connections open that admission does not count (busy notices, ones being cut)."""
        live = len(self.sessions) + sum(listener.handshaking for listener in self._listeners)
        return max(0, live - len(self.admission))

    def _handshake_failed(self, protocol: object) -> None:
        self.admission.closed(protocol)

    def _cut(self, session: Session, code: str, message: str) -> None:
        """Close a connection admission gave up on: in its TLS handshake, or waiting for hello."""
        self.count_error(code)
        if session.conn is not None:
            session.close_with(code, message)
            return
        for listener in self._listeners:
            if listener.abort_handshake(session):
                return

    def _log_pressure(self) -> None:
        """One line a minute at most, with counts, however hard the node is pushed."""
        report = self.admission.pressure_report(self.loop.time(), PRESSURE_LOG_INTERVAL)
        if report is not None:
            _log.warning(
                "edge admission under pressure: %d connections shed, %d refused, %d cut at the %g s "
                "handshake deadline since the last report; %d open, %d of them without hello",
                *report,
                self.config.handshake_deadline,
                len(self.admission),
                self.admission.pending_count,
            )

    def session_started(self, session: Session) -> None:
        self.sessions.add(session)
        self.admission.progressed(session)  # TLS is up: it is shed after every silent one

    def session_closing(self, session: Session) -> None:
        """``session`` is closing: it is no longer the device's session and its ports end."""
        if session.device is not None and self.devices.get(session.device) is session:
            del self.devices[session.device]
            if self.presence is not None:
                self.presence.device_left(session.device)
        self.ports.session_closed(session)

    def session_ended(self, session: Session) -> None:
        self.sessions.discard(session)
        self.admission.closed(session)
        if session.conn is not None:
            self._closed_bytes_in += session.conn.bytes_in
            self._closed_bytes_out += session.conn.bytes_out
        if session.device is not None:
            session.flush_usage(self.epoch)
        self.session_closing(session)

    # ---- SessionHost: what sessions ask of the server ----------------------------------------

    def before_hello(self, session: Session, msg: Message) -> None:
        self.handlers.before_hello(session, msg)

    def dispatch(self, session: Session, msg: Message) -> None:
        self.handlers.dispatch(session, msg)

    def check_usage(self, session: Session) -> None:
        self.handlers.check_usage(session)

    async def find_device(self, device: bytes) -> PortEnd | None:
        """The end serving ``device``: its session here, else what the resolver finds, else None."""
        local = self.devices.get(device)
        if local is not None or self.resolver is None:
            return local
        return await self.resolver.find(device)

    def register_device(self, session: Session, device: bytes) -> DeviceAccount:
        """``session`` proved ``device``: it replaces any older session of the same device."""
        old = self.devices.get(device)
        self.devices[device] = session
        self.admission.authenticated(session)
        if old is not None and old is not session:
            old.close_with(
                codes.REPLACED, "a newer session of this device connected; this one is closed", "warning"
            )
        account = self.accounts.get(device)
        if account is None:
            account = self.accounts[device] = DeviceAccount(device)
        return account

    # ---- helpers ----------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task owned by the server (kept referenced, errors logged)."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("edge task failed", exc_info=task.exception())

    def count_error(self, code: str) -> None:
        self.errors[code] += 1

    def own_record(self) -> dict[str, Any]:
        """This node's record for getnode, signed like peer messages (SPEC 4: sorted-key msgpack)."""
        record: dict[str, Any] = {
            "node": self.node_address,
            "host": self.config.host,
            "edge_ports": self.bound_ports or list(self.config.edge2_ports),
            "peer_port": self.config.peer2_port,
            "version": VERSION,
            "chain_id": self.config.chain_id,
        }
        packed = msgpack.packb(dict(sorted(record.items())), use_bin_type=True)
        record["signature"] = self.node_key.sign_hash(keccak256(packed))
        return record

    def usage_of(self, device: bytes) -> int:
        """Bytes counted for ``device`` in the current epoch (flushes its live session first)."""
        session = self.devices.get(device)
        if session is not None:
            session.flush_usage(self.epoch)
        account = self.accounts.get(device)
        return account.usage.get(self.epoch, 0) if account is not None else 0


def _fleet_address(text: str) -> bytes:
    """The node's default fleet (config fleet_contract), or 20 zero bytes when none is set."""
    if not text:
        return bytes(20)
    try:
        return parse_address(text)
    except CryptoError as exc:
        raise ChrError(f"config fleet_contract {text!r} is not an address: {exc}") from exc
