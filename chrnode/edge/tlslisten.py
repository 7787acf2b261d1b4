"""Listening and connecting for chrnode.edge.tlsconn: accept loop with admission, client connect.

The listener accepts in batches, asks ``protocol_factory(peer_address)`` for a protocol (None
refuses the socket before any TLS work: connection and rate limits), wraps the socket with the
server context and starts the handshake; it counts handshakes in progress and failed ones.
Admission hooks (chrnode.edge.admission): ``abort_handshake(protocol)`` cuts a connection still
in its handshake, ``on_failed(protocol)`` is told of every handshake that did not finish, and
``on_spoke(protocol)`` of every connection that had sent bytes (its ClientHello) when accepted.
With ``defer_accept`` (Linux TCP_DEFER_ACCEPT) the kernel holds back connections that send
nothing for that long, so an idle slowloris socket costs the process nothing meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from collections.abc import Callable

from chrnode import held_ports
from chrnode.edge.tlsconn import TlsConnection, TlsProtocol
from chrnode.errors import ProtocolError
from chrnode.fdlimit import DESCRIPTOR_ERRORS, AcceptPause

__all__ = ["TlsListener", "open_tls_connection", "start_tls_server"]

_log = logging.getLogger("chrnode.edge")

TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # Linux 3.12+; Python names it from 3.13

ACCEPTS_PER_CALLBACK = 64


class TlsListener:
    """A listening socket that accepts TLS connections and hands each to a fresh protocol.

    ``protocol_factory(peer_address)`` returns the protocol of a new connection, or None to refuse
    it before any TLS work is done (connection limits, rate limits).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ssl_context: ssl.SSLContext,
        protocol_factory: Callable[[tuple[str, int]], TlsProtocol | None],
        handshake_timeout: float,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._ctx = ssl_context
        self._factory = protocol_factory
        self._timeout = handshake_timeout
        self.port: int = sock.getsockname()[1]
        self.accepted = 0
        self.refused = 0
        self.handshakes_failed = 0
        self._handshakes: dict[TlsProtocol, TlsConnection] = {}
        self._pause = AcceptPause()
        self._retry: asyncio.TimerHandle | None = None
        self.on_failed: Callable[[TlsProtocol], None] | None = None
        self.on_spoke: Callable[[TlsProtocol], None] | None = None
        loop.add_reader(sock.fileno(), self._on_accept)

    @property
    def handshaking(self) -> int:
        return len(self._handshakes)

    def abort_handshake(self, protocol: TlsProtocol) -> bool:
        """Cut the connection of ``protocol`` if it is still in its TLS handshake."""
        conn = self._handshakes.get(protocol)
        if conn is None:
            return False
        conn.abort()
        return True

    def _on_accept(self) -> None:
        for _ in range(ACCEPTS_PER_CALLBACK):
            try:
                raw, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in DESCRIPTOR_ERRORS:
                    self._back_off(exc)
                else:
                    _log.warning("accept on port %d failed: %s", self.port, exc)
                return
            if self._pause.in_episode:
                ended = self._pause.succeeded(self._loop.time())
                if ended is not None:
                    _log.warning(
                        "device port %d accepts again; it was out of descriptors for %.1f s "
                        "(%d accepts failed)",
                        self.port,
                        ended[1],
                        ended[0],
                    )
            protocol = self._factory(addr)
            if protocol is None:
                self.refused += 1
                raw.close()
                continue
            self.accepted += 1
            if self.on_spoke is not None and _has_bytes(raw):
                self.on_spoke(protocol)
            self._start(raw, protocol)

    def _back_off(self, exc: OSError) -> None:
        """Out of descriptors: the socket stays readable, so stop watching it for a while
        instead of spinning (chrnode.fdlimit); one log line per episode."""
        delay, starts = self._pause.failed(self._loop.time())
        if starts:
            _log.warning(
                "device port %d is out of descriptors (%s): pausing accept, retrying every %g-%g s",
                self.port,
                exc.strerror,
                self._pause.first,
                self._pause.longest,
            )
        if self._retry is None and self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._retry = self._loop.call_later(delay, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._retry = None
        if self._sock.fileno() >= 0:
            self._loop.add_reader(self._sock.fileno(), self._on_accept)

    def _start(self, raw: socket.socket, protocol: TlsProtocol) -> None:
        try:
            raw.setblocking(False)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self._ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError) as exc:
            _log.debug("could not start TLS on an accepted socket: %s", exc)
            raw.close()
            if self.on_failed is not None:
                self.on_failed(protocol)
            return
        conn = TlsConnection(self._loop, sock, protocol, self._handshake_done)
        self._handshakes[protocol] = conn
        conn.start_handshake(self._timeout)

    def _handshake_done(self, conn: TlsConnection, exc: BaseException | None) -> None:
        self._handshakes.pop(conn.protocol, None)
        if exc is not None:
            self.handshakes_failed += 1
            if self.on_failed is not None:
                self.on_failed(conn.protocol)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()


def _has_bytes(raw: socket.socket) -> bool:
    """Whether the peer of a just-accepted socket has sent anything yet (one peek, no read)."""
    try:
        return bool(raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing yet (EAGAIN), or already reset: the handshake will tell
        return False


def start_tls_server(
    loop: asyncio.AbstractEventLoop,
    ssl_context: ssl.SSLContext,
    host: str,
    port: int,
    protocol_factory: Callable[[tuple[str, int]], TlsProtocol | None],
    handshake_timeout: float,
    backlog: int = 1024,
    defer_accept: float = 0.0,
) -> TlsListener:
    """Listen on (host, port) (0 picks a free port) and serve TLS with ``protocol_factory``;
    ``defer_accept`` > 0 sets TCP_DEFER_ACCEPT to that many seconds where the OS has it."""
    # The daemon's held socket when it holds this port (chrnode.held_ports), else a new one.
    (sock,) = held_ports.take(host, port) or held_ports.tcp_listener(host, port, backlog)
    try:
        sock.listen(backlog)
        if defer_accept > 0 and hasattr(socket, "TCP_DEFER_ACCEPT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, max(1, math.ceil(defer_accept)))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return TlsListener(loop, sock, ssl_context, protocol_factory, handshake_timeout)


async def open_tls_connection(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    protocol: TlsProtocol,
    handshake_timeout: float = 30.0,
    *,
    notsent_lowat: int = 0,
) -> TlsConnection:
    """Connect to (host, port), do the TLS client handshake, and attach ``protocol``.

    ``notsent_lowat`` > 0 caps the bytes the kernel holds unsent for this socket
    (TCP_NOTSENT_LOWAT): what is written is then still ours to hold back (a paused port, SPEC 4)
    rather than committed to the stream in front of everything written later.

    Raises OSError/ssl.SSLError from the connect or handshake, TimeoutError when it takes longer
    than ``handshake_timeout``.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, address = infos[0]
    raw = socket.socket(family, socket.SOCK_STREAM)
    try:
        raw.setblocking(False)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if notsent_lowat > 0:
            raw.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, notsent_lowat)
        await asyncio.wait_for(loop.sock_connect(raw, address), handshake_timeout)
        sock = ssl_context.wrap_socket(raw, server_side=False, do_handshake_on_connect=False)
    except BaseException:
        raw.close()
        raise
    ready: asyncio.Future[None] = loop.create_future()

    def on_ready(_conn: TlsConnection, exc: BaseException | None) -> None:
        if ready.done():
            return
        if exc is None:
            ready.set_result(None)
        else:
            ready.set_exception(exc)

    conn = TlsConnection(loop, sock, protocol, on_ready)
    conn.start_handshake(handshake_timeout)
    try:
        await ready
    except ProtocolError as exc:
        raise TimeoutError(
            f"TLS handshake with {host}:{port} did not finish in {handshake_timeout} s"
        ) from exc
    except BaseException:
        conn.abort()
        raise
    return conn
