"""Ports on the device side (SPEC 4): a byte stream to another device through the node.

:class:`Port` is what ``DeviceClient.open_port`` returns and what an accepted incoming portopen
becomes: ``await read()``, ``await write(data)``, ``await close()``. ``pump`` joins a port to a
local TCP connection in both directions (``publish`` and ``bind`` use it); ``tunnel`` is what
``bind`` does with each local connection: open a port for it, or log why not and reset it;
``answer_portopen`` is the other side: accept a portopen the node forwards, or refuse it saying why.

Flow control: data received for a port waits in the port until read; past ``READ_HIGH`` bytes the
client stops reading its TLS connection (so the node, then the sender, slow down) until the
reader catches up. ``write`` waits while the TLS connection's outgoing buffer is full.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

from chrnode.crypto import to_hex_address
from chrnode.edge import codes
from chrnode.edge.messages import (
    PORTOPEN,
    ErrorReply,
    Message,
    PortClose,
    PortOpen,
    PortOpenReply,
    encode_portsend_parts,
)
from chrnode.errors import ChrError, ConnectionClosed, describe

__all__ = ["Acceptor", "Port", "PortHost", "PortOffer", "answer_portopen", "pump", "tunnel"]

_log = logging.getLogger("chrnode.client")

READ_HIGH = 4 * 1024 * 1024
READ_LOW = 1024 * 1024
WRITE_CHUNK = 256 * 1024  # data per portsend frame (well under the node's 1 MiB frame limit)
JOIN_LIMIT = 64 * 1024  # below this the frame header and data are joined into one TLS write


class PortHost(Protocol):
    """What a port needs of the connection it runs on (the DeviceClient implements it), so that
    this lower module needs nothing of the client (no import cycle)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def is_open(self) -> bool: ...
    @property
    def shared_ports(self) -> set[int | str]: ...
    def send(self, msg: Message) -> None: ...
    def write_raw(self, data: bytes | bytearray | memoryview) -> None: ...
    async def drain(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def forget_port(self, ref: int) -> None: ...
    def adopt_port(self, port: Port) -> None: ...
    async def open_port(self, target: bytes | str, port: int | str, flags: str = "rw") -> Port: ...


class Port:
    """One end of a port. ``peer`` is the other device; ``flags`` the opener's (SPEC 4)."""

    def __init__(
        self, client: PortHost, ref: int, peer: bytes, name: int | str, flags: str, opener: bool
    ) -> None:
        self.client = client
        self.ref = ref
        self.peer = peer
        self.name = name
        self.flags = flags
        self.opener = opener
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._closed = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._sendable = asyncio.Event()  # cleared while the node has paused this port (port_pause)
        self._sendable.set()
        self.bytes_read = 0
        self.bytes_written = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return self._size

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    async def read(self, limit: int = -1) -> bytes:
        """The next bytes received (at most ``limit`` if > 0); b"" once the port is closed."""
        while not self._chunks:
            if self._eof:
                return b""
            self._waiter = self.client.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        if 0 < limit < len(chunk):
            self._chunks.appendleft(chunk[limit:])
            chunk = chunk[:limit]
        self._size -= len(chunk)
        self.bytes_read += len(chunk)
        if self._paused and self._size <= READ_LOW:
            self._paused = False
            self.client.resume_reading()
        return chunk

    async def readexactly(self, size: int) -> bytes:
        """Exactly ``size`` bytes; ConnectionClosed if the port ends first."""
        parts: list[bytes] = []
        need = size
        while need:
            chunk = await self.read(need)
            if not chunk:
                raise ConnectionClosed(f"port {self.ref} closed after {size - need} of {size} bytes")
            parts.append(chunk)
            need -= len(chunk)
        return b"".join(parts)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` to the other device (split into frames); waits while the link is congested."""
        if self._closed:
            raise ConnectionClosed(f"port {self.ref} is closed")
        if "w" not in self.flags if self.opener else "r" not in self.flags:
            raise ChrError(f"port {self.ref} was opened with flags {self.flags!r}: this side may not write")
        view = memoryview(data)
        for start in range(0, len(view), WRITE_CHUNK):
            if not self._sendable.is_set():  # the reader is slow: wait for port_resume (SPEC 4)
                await self._sendable.wait()
                if self._closed:
                    raise ConnectionClosed(f"port {self.ref} closed while paused")
            chunk = view[start : start + WRITE_CHUNK]
            header, body = encode_portsend_parts(self.ref, chunk)
            if len(chunk) < JOIN_LIMIT:
                self.client.write_raw(header + bytes(body))
            else:
                # A view is copied by the transport only if the socket cannot take it now.
                self.client.write_raw(header)
                self.client.write_raw(body)
            self.bytes_written += len(chunk)
            await self.client.drain()
            if len(view) > WRITE_CHUNK:
                await asyncio.sleep(0)  # let a port_pause that arrived meanwhile be read

    async def close(self) -> None:
        """Close the port on both sides (portclose); reading returns b"" afterwards."""
        if self._closed:
            return
        self._closed = True
        self.client.forget_port(self.ref)
        if self.client.is_open:
            self.client.send(PortClose(ref=self.ref))
        self.feed_eof()

    # ---- called by the client ---------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._eof or not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        if not self._paused and self._size > READ_HIGH:
            self._paused = True
            self.client.pause_reading()
        self._wake()

    def hold(self) -> None:
        """The node paused this port (its reader is slow): write() waits until release()."""
        self._sendable.clear()

    def release(self) -> None:
        self._sendable.set()

    def feed_eof(self) -> None:
        self._eof = True
        self._closed = True
        self._sendable.set()
        if self._paused:
            self._paused = False
            self.client.resume_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def pump(port: Port, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy a local TCP connection and a port into each other until either side ends."""

    async def upstream() -> None:
        try:
            while data := await reader.read(WRITE_CHUNK):
                await port.write(data)
        except (ChrError, OSError) as exc:
            _log.debug("port %d: local side ended: %s", port.ref, exc)
        finally:
            await port.close()

    async def downstream() -> None:
        try:
            while data := await port.read():
                writer.write(data)
                await writer.drain()
        except (ChrError, OSError) as exc:
            _log.debug("port %d: remote side ended: %s", port.ref, exc)
        finally:
            writer.close()

    up = asyncio.ensure_future(upstream())
    down = asyncio.ensure_future(downstream())
    try:
        await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        if down.done():
            # The remote end closed and everything it sent is written: stop reading locally too.
            up.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, asyncio.CancelledError):
            pass


async def tunnel(
    client: PortHost,
    target: bytes | str,
    port_name: int | str,
    flags: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """One local connection accepted by ``bind``: open a port to ``target`` and pump, or, when the
    node or the target refuses, log the code and message and reset the local connection."""
    try:
        port = await client.open_port(target, port_name, flags)
    except ChrError as exc:
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a local client"
        label = to_hex_address(target) if isinstance(target, bytes) else repr(target)
        _log.warning("bind: reset the connection from %s: port %r of %s: %s", where, port_name, label,
                     describe(exc))  # fmt: skip
        reset(writer)
        return
    await pump(port, reader, writer)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close a local TCP connection with RST (SO_LINGER 0), so that its client sees an error
    ("connection reset") rather than an empty answer that looks like success."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # already gone: closing it is all that is left
    writer.transport.abort()


@dataclasses.dataclass(frozen=True)
class PortOffer:
    """An incoming portopen: ``device`` (the opener) wants ``port`` with ``flags``."""

    ref: int
    device: bytes
    port: int | str
    flags: str


Acceptor = Callable[[PortOffer], Awaitable[bool]]


async def answer_portopen(
    client: PortHost, msg: PortOpen, local: tuple[str, int] | None, acceptor: Acceptor | None
) -> Port | None:
    """Answer a portopen the node forwarded (SPEC 4): a published port (``local``, host and port
    of its service) is accepted once its TCP connection is made and pumped until either side
    ends; otherwise ``acceptor`` decides and an accepted port is returned to the caller. A refusal
    is answered with ``refused`` and the reason, which the opener gets in its error."""
    assert msg.ref is not None and msg.device is not None and msg.id is not None
    opener = to_hex_address(msg.device)
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        if local is not None:
            streams = await asyncio.open_connection(*local)
            accepted = True
        elif acceptor is not None:
            accepted = bool(await acceptor(PortOffer(msg.ref, msg.device, msg.port, msg.flags)))
        else:
            accepted = False
    except (OSError, ChrError) as exc:
        reason = f"local service for {msg.port!r} failed: {exc}"
        _log.warning("refused port %r to %s: %s", msg.port, opener, reason)
        client.send(ErrorReply(PORTOPEN, codes.REFUSED, reason, msg.id))
        return None
    if not client.is_open:
        return None
    if not accepted:
        why = "the device declined it" if acceptor is not None else "this device does not publish it"
        reason = f"port {msg.port!r} is not offered here: {why}"
        _log.warning("refused port %r to %s: %s", msg.port, opener, reason)
        client.send(ErrorReply(PORTOPEN, codes.REFUSED, reason, msg.id))
        return None
    _log.info("port %r opened by %s (ref %d)", msg.port, opener, msg.ref)
    port = Port(client, msg.ref, msg.device, msg.port, msg.flags, opener=False)
    client.adopt_port(port)
    # A port this device shares as a channel: later "s" openers join without asking (protocol.md).
    shared = "s" in msg.flags and msg.port in client.shared_ports
    client.send(PortOpenReply(id=msg.id, shared=True if shared else None))
    if streams is None:
        return port
    await pump(port, *streams)
    return None
