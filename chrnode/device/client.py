"""The asyncio device client of the EdgeV2 port (SPEC 3, 4, 5), used by tests and `chr-node device`.

    key = DeviceKey.load_or_create("device.key")
    client = await connect("127.0.0.1", 41046, key, expect_node=node_address)
    port = await client.open_port(other_device, 80)          # or a BNS name
    await port.write(b"GET / HTTP/1.0\\r\\n\\r\\n"); print(await port.read())
    await client.publish("127.0.0.1", 8080, "web")           # serve a local TCP service
    local = await client.bind(0, other_device, "web")        # curl localhost:<local> reaches it
    await client.close()

It uses the node's own TLS transport (chrnode.edge.tlsconn) and zero-copy frame reader, checks
the node's address from its certificate, proves its key in hello, and pays with tickets
automatically (chrnode.device.tickets).

What the node refuses or says is logged on ``chrnode.client`` with its code (refused tickets,
notices, refused ports); why the connection ended is ``client.closed_reason`` (the notify that
was the last frame, docs/protocol.md), None when this side closed it. ``keep_alive()`` pings so
that a client that only waits for ports is not closed as idle. Guide: docs/devices.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from chrnode.crypto import PrivateKey, to_hex_address
from chrnode.device.key import DeviceKey
from chrnode.device.link import Link
from chrnode.device.ports import Acceptor, Port, PortOffer, answer_portopen, tunnel
from chrnode.device.tickets import MIN_ADVANCE, TicketAgent
from chrnode.edge import codes
from chrnode.edge.frame import DEFAULT_MAX_FRAME_SIZE, VERSION
from chrnode.edge.hello import sign_hello
from chrnode.edge.messages import (
    ErrorReply,
    Hello,
    HelloReply,
    Message,
    Notify,
    Ping,
    PingReply,
    PortClose,
    PortOpen,
    PortOpenReply,
    PortPause,
    PortResume,
    TicketMsg,
    TicketReply,
    TicketRequest,
    encode_message,
)
from chrnode.edge.tlsconn import TlsConnection
from chrnode.edge.tlslisten import open_tls_connection
from chrnode.errors import ChrError, ConnectionClosed, CryptoError, RequestRefused
from chrnode.identity import edge_client_context, node_address_from_cert

__all__ = ["DeviceClient", "DeviceKey", "Port", "PortOffer", "connect"]

_log = logging.getLogger("chrnode.client")

REQUEST_TIMEOUT = 30.0
# What the kernel may hold unsent (TCP_NOTSENT_LOWAT): a port_pause (SPEC 4) stops what is still
# ours; what was already given to the kernel reaches the node and waits there for the slow reader.
UNSENT_LIMIT = 128 * 1024
KEEPALIVE_INTERVAL = 60.0  # well under the node's default idle_timeout (300 s)
_NOTIFY_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


async def connect(
    host: str,
    port: int,
    key: DeviceKey | PrivateKey,
    expect_node: bytes | None = None,
    compress: bool = False,
    *,
    auto_tickets: bool = True,
    fleet: bytes | None = None,
    ticket_advance: int = MIN_ADVANCE,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> DeviceClient:
    """Connect to a node's device port, check its address (when ``expect_node`` is given), hello.

    With ``auto_tickets`` a first ticket is sent before returning and more as usage grows, each
    paying at least ``ticket_advance`` bytes ahead of the usage.
    Raises CryptoError (wrong node), RequestRefused (hello refused), ConnectionClosed, OSError.
    """
    private = key.private_key if isinstance(key, DeviceKey) else key
    client = DeviceClient(private, compress)
    context = ssl_context or edge_client_context()
    try:
        conn = await open_tls_connection(
            host, port, context, client.link, timeout, notsent_lowat=UNSENT_LIMIT
        )
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        raise ConnectionClosed(f"cannot connect to node at {host}:{port}: {exc}", codes.UNAVAILABLE) from exc
    client.conn = conn
    try:
        der = conn.peer_certificate()
        if der is None:
            raise CryptoError(f"node at {host}:{port} sent no certificate")
        node = node_address_from_cert(der)
        if expect_node is not None and node != expect_node:
            raise CryptoError(
                f"node at {host}:{port} is {to_hex_address(node)}, expected {to_hex_address(expect_node)}"
            )
        proof = sign_hello(private, conn.channel_binding(), node)
        reply = await client.request(
            Hello(device=private.address, device_sig=proof, version=VERSION, compress=compress), timeout
        )
        assert isinstance(reply, HelloReply)
    except BaseException:
        conn.abort()
        raise
    client.node, client.epoch, client.chain_id = reply.node, reply.epoch, reply.chain_id
    client.fleet = fleet or reply.fleet
    client.tickets = TicketAgent(client, client.fleet, reply.epoch, ticket_advance)
    if auto_tickets:
        client.auto_tickets = True
        await client.tickets.send()
    return client


class DeviceClient:
    """One device connection to a node. Build it with :func:`connect`."""

    def __init__(self, key: PrivateKey, compress: bool = False) -> None:
        self.key = key
        self.address = key.address
        self.compress = compress
        self.loop = asyncio.get_running_loop()
        self.link = Link(self, DEFAULT_MAX_FRAME_SIZE)
        self.conn: TlsConnection | None = None
        self.node = b""
        self.epoch = 0
        self.chain_id = 0
        self.fleet = bytes(20)
        self.tickets: TicketAgent | None = None
        self.auto_tickets = False
        self.on_portopen: Acceptor | None = None
        # Ports this device shares as channels: an accepted "s" portopen on one answers shared.
        self.shared_ports: set[int | str] = set()
        self.on_notify: Callable[[Notify], None] | None = None
        self.notifications: list[Notify] = []
        self.closed_reason: ConnectionClosed | None = None
        self._last_notify: Notify | None = None  # while it is the last frame received
        self._closing = False
        self._ports: dict[int, Port] = {}
        self._published: dict[int | str, tuple[str, int]] = {}
        self._servers: list[asyncio.Server] = []
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._opening: dict[int, tuple[bytes, int | str, str]] = {}
        self._accepted: asyncio.Queue[Port] = asyncio.Queue()
        self._next_id = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._drained: asyncio.Event = asyncio.Event()
        self._drained.set()
        self._read_pauses = 0
        self._closed: asyncio.Future[None] = self.loop.create_future()

    # ---- requests ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.conn is not None and self.conn.is_open

    async def request(self, msg: Message, timeout: float = REQUEST_TIMEOUT) -> Message:
        """Send ``msg`` with a fresh id and wait for its answer; RequestRefused on an error answer."""
        return await self._request(msg, timeout)

    async def _request(
        self, msg: Message, timeout: float, opening: tuple[bytes, int | str, str] | None = None
    ) -> Message:
        if not self.is_open:
            raise self._closed_error()
        self._next_id += 1
        request_id = self._next_id
        if opening is not None:
            self._opening[request_id] = opening
        future: asyncio.Future[Message] = self.loop.create_future()
        self._pending[request_id] = future
        try:
            self.send(dataclasses.replace(msg, id=request_id))
            answer = await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise RequestRefused(
                f"no answer to {type(msg).__name__} within {timeout} s", codes.TIMEOUT
            ) from exc
        finally:
            self._pending.pop(request_id, None)
            self._opening.pop(request_id, None)
        if isinstance(answer, ErrorReply):
            raise RequestRefused(answer.message, answer.code, request_id)
        return answer

    def send(self, msg: Message) -> None:
        self.write_raw(encode_message(msg))

    def write_raw(self, data: bytes | bytearray | memoryview) -> None:
        conn = self.conn
        if conn is None or not conn.is_open:
            raise self._closed_error()
        conn.write(data)
        tickets = self.tickets
        if self.auto_tickets and tickets is not None:
            tickets.traffic_changed(conn.bytes_in + conn.bytes_out)

    async def drain(self) -> None:
        """Wait while the outgoing TLS buffer is above its high-water mark."""
        if not self._drained.is_set():
            await self._drained.wait()
        if not self.is_open:
            raise self._closed_error()

    async def ping(self) -> int:
        reply = await self.request(Ping())
        assert isinstance(reply, PingReply)
        return reply.time

    def keep_alive(self, interval: float = KEEPALIVE_INTERVAL) -> None:
        """Ping the node every ``interval`` s while the connection is open: a device that only
        waits for ports (publish, bind) sends nothing, and the node closes sessions without
        traffic for its idle_timeout (300 s by default) with a ``timeout`` notify."""

        async def run() -> None:
            while self.is_open:
                await asyncio.sleep(interval)
                try:
                    await self.ping()
                except ChrError as exc:
                    _log.debug("keep-alive ping failed: %s", exc)
                    return

        self.spawn(run())

    async def send_ticket(self, ticket: Any) -> TicketReply:
        """Send a ticket made by the caller (tests); the answer, or RequestRefused."""
        reply = await self.request(TicketMsg(ticket=ticket))
        assert isinstance(reply, TicketReply)
        return reply

    def traffic(self) -> int:
        conn = self.conn
        return conn.bytes_in + conn.bytes_out if conn is not None else 0

    # ---- ports ------------------------------------------------------------------------------

    async def open_port(self, target: bytes | str, port: int | str, flags: str = "rw") -> Port:
        """Open a port to a device (20-byte address) or a BNS name; RequestRefused if refused."""
        if isinstance(target, bytes | bytearray):
            peer = bytes(target)
            msg = PortOpen(port=port, device=peer, flags=flags)
        else:
            peer = b""  # known to the node only
            msg = PortOpen(port=port, name=target, flags=flags)
        reply = await self._request(msg, REQUEST_TIMEOUT, (peer, port, flags))
        assert isinstance(reply, PortOpenReply) and reply.ref is not None
        # Registered by the link when the answer arrived (data may follow it at once); fetch it.
        found = self._ports.get(reply.ref)
        if found is None:
            raise ConnectionClosed(f"port {reply.ref} closed before it could be used")
        return found

    async def publish(self, local_host: str, local_port: int, port_name: int | str) -> None:
        """Accept portopen for ``port_name`` and connect each to the local TCP service."""
        self._published[port_name] = (local_host, local_port)

    async def bind(
        self,
        local_port: int,
        device: bytes | str,
        remote_port: int | str,
        local_host: str = "127.0.0.1",
        flags: str = "rw",
        check: bool = False,
    ) -> int:
        """Listen on (local_host, local_port) (0 = any) and tunnel each TCP connection to
        ``remote_port`` of ``device`` through a new port; returns the bound local port.

        With ``check`` a port is opened and closed at once first, so that a target that is not
        connected (``not_found``) or does not offer the port (``refused``) raises RequestRefused
        here. A local connection whose port is refused later is logged with the code and message
        and reset (RST), so that its client sees a failure instead of an empty answer."""
        if check:
            probe = await self.open_port(device, remote_port, flags)
            await probe.close()
        handle = functools.partial(tunnel, self, device, remote_port, flags)
        server = await asyncio.start_server(handle, local_host, local_port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def forget_port(self, ref: int) -> None:
        self._ports.pop(ref, None)

    # ---- called by the link -----------------------------------------------------------------

    def answer_received(self, msg: Message) -> None:
        self._last_notify = None
        request_id = getattr(msg, "id", None)
        if not isinstance(request_id, int):
            _log.debug("answer without id: %r", msg)
            return
        future = self._pending.get(request_id)
        if future is None or future.done():
            _log.debug("answer to unknown request %r", request_id)
            return
        if isinstance(msg, PortOpenReply) and msg.ref is not None:
            opening = self._opening.pop(request_id, None)
            if opening is not None:
                peer, name, flags = opening
                self._ports[msg.ref] = Port(self, msg.ref, peer, name, flags, opener=True)
        future.set_result(msg)

    def request_received(self, msg: Message) -> None:
        self._last_notify = None
        if isinstance(msg, PortOpen):
            self.spawn(self._offer(msg))
        elif isinstance(msg, PortClose):
            port = self._ports.pop(msg.ref, None)
            if port is not None:
                port.feed_eof()
        elif isinstance(msg, PortPause | PortResume):
            port = self._ports.get(msg.ref)
            if port is not None and isinstance(msg, PortPause):
                port.hold()
            elif port is not None:
                port.release()
        elif isinstance(msg, TicketRequest):
            if self.tickets is not None and self.auto_tickets:
                self.tickets.ticket_requested(msg.usage, msg.epoch)
        elif isinstance(msg, Notify):
            self._notified(msg)
        elif isinstance(msg, Ping) and msg.id is not None:
            self.send(PingReply(time=0, id=msg.id))

    def data_received(self, ref: int, data: bytes) -> None:
        self._last_notify = None
        port = self._ports.get(ref)
        if port is not None:
            port.feed(data)
        tickets = self.tickets
        if self.auto_tickets and tickets is not None:
            tickets.traffic_changed(self.traffic())

    def _notified(self, msg: Notify) -> None:
        self.notifications.append(msg)
        del self.notifications[:-100]
        # A node that closes a session says why in a notify sent as its last frame (SPEC 4,
        # docs/devices.md): if the connection ends before another frame arrives, that is the reason.
        self._last_notify = msg
        _log.log(_NOTIFY_LEVELS.get(msg.level, logging.WARNING), "node notice: %s: %s", msg.code, msg.message)
        if self.on_notify is not None:
            self.on_notify(msg)

    def connection_lost(self, exc: BaseException | None) -> None:
        last = self._last_notify
        if self.closed_reason is None and last is not None and not self._closing:
            self.closed_reason = ConnectionClosed(last.message, last.code)
        error = self._closed_error(exc)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        for port in list(self._ports.values()):
            port.feed_eof()
        self._ports.clear()
        self._drained.set()
        if not self._closed.done():
            self._closed.set_result(None)

    def writing_paused(self, paused: bool) -> None:
        if paused:
            self._drained.clear()
        else:
            self._drained.set()

    def pause_reading(self) -> None:
        self._read_pauses += 1
        if self._read_pauses == 1 and self.conn is not None:
            self.conn.pause_reading()

    def resume_reading(self) -> None:
        if self._read_pauses:
            self._read_pauses -= 1
            if self._read_pauses == 0 and self.conn is not None:
                self.conn.resume_reading()

    async def _offer(self, msg: PortOpen) -> None:
        port = await answer_portopen(self, msg, self._published.get(msg.port), self.on_portopen)
        if port is not None:
            self._accepted.put_nowait(port)

    def adopt_port(self, port: Port) -> None:
        """An accepted incoming port: registered before the answer is sent, because the opener's
        data may follow the answer at once."""
        self._ports[port.ref] = port

    async def accept(self) -> Port:
        """The next port accepted by ``on_portopen`` (published ports are pumped, not queued)."""
        return await self._accepted.get()

    # ---- lifecycle --------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Close every port and the connection, and stop bound listeners."""
        self._closing = True
        for server in self._servers:
            server.close()
        if self.conn is not None:
            self.conn.close()
            await self.conn.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def _closed_error(self, exc: BaseException | None = None) -> ConnectionClosed:
        if self.closed_reason is not None:
            return self.closed_reason
        return ConnectionClosed(f"the connection to the node is closed{f': {exc}' if exc else ''}")
