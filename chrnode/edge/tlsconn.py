"""TLS over raw non-blocking sockets for asyncio, built for many idle connections (SPEC 3, 13).

asyncio's built-in TLS (``loop.create_server(ssl=...)``) keeps a 256 KiB read buffer and two
memory BIOs per connection, about 280 KiB of RSS each; the node must hold 10,000 idle devices at
60 KiB or less each (SPEC 13). This transport lets OpenSSL own the socket instead:

- Each connection is an ``ssl.SSLSocket`` in non-blocking mode, watched with ``loop.add_reader``
  and ``loop.add_writer``. OpenSSL reads ciphertext from the kernel itself and, with
  ``SSL_MODE_RELEASE_BUFFERS`` (which CPython sets on every context; checked in the tests), frees
  its 16 KiB record buffers whenever they are empty. An idle connection holds no buffer at all.
- Plaintext is decrypted straight into a buffer the protocol hands out (``get_buffer``, like
  ``asyncio.BufferedProtocol``): a shared per-thread scratch buffer for small frames, or the
  exact-size buffer of a large frame being assembled, so relayed data is copied no more than
  the kernel and OpenSSL require.
- Writes go to OpenSSL at once (latency: a relayed small message costs one TLS write); only
  what the socket cannot take is queued, as bytes objects, and small queued pieces are joined
  into one TLS write when the socket drains. The queue has high/low water marks that call
  ``pause_writing`` / ``resume_writing`` on the protocol, which the relay uses to pause the
  senders feeding a slow reader instead of buffering without bound.
- Reads stop at a short TLS record (the end of a burst: epoll reports the next one) and go on
  through full 16 KiB records (bulk data), so neither case pays a needless read or loop turn.

A MemoryBIO pair (``ssl.SSLObject``) was the other candidate; its BIO buffers grow to the largest
chunk ever passed and never shrink, so a connection that once moved data stays large, and every
byte is copied twice more. Renegotiation is refused on server contexts (``OP_NO_RENEGOTIATION``),
so reads never have to wait for writability in practice; the rare case is still handled.

The hot path calls the C-level ``_ssl._SSLSocket`` behind ``SSLSocket._sslobj`` directly (its
``read(n, buffer)``, ``write`` and ``pending``): the Python wrappers of ``ssl.SSLSocket`` only
re-check state this class already tracks, and cost about a microsecond per call.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from chrnode.edge.tlsbase import SslCore, scratch_buffer
from chrnode.errors import ProtocolError

__all__ = ["TlsConnection", "TlsProtocol", "scratch_buffer"]  # scratch_buffer re-exported from tlsbase

_log = logging.getLogger("chrnode.edge")

COALESCE_LIMIT = 64 * 1024  # small queued writes are joined up to this size into one TLS write
DEFAULT_HIGH_WATER = 512 * 1024
DEFAULT_LOW_WATER = 128 * 1024
CLOSE_TIMEOUT = 10.0  # seconds to flush queued data on close() before the socket is cut
MAX_RECORD = 16 * 1024  # TLS plaintext record limit: a full record hints at more data behind it
READS_PER_CALLBACK = 32  # then yield to other connections (fairness), at most ~512 KiB per turn

# A write this large (a big port frame: OpenSSL writes it as one 16 KiB record per send) is
# corked (TCP_CORK) while OpenSSL writes it, so the kernel sends it in full segments and the
# reader is woken for a few segments, not once per record; small writes are never delayed.
CORK_MIN = 64 * 1024
_TCP_CORK: int = getattr(socket, "TCP_CORK", 0)  # Linux; elsewhere the records go as they come

_HANDSHAKE, _OPEN, _CLOSING, _CLOSED = 0, 1, 2, 3


class TlsProtocol(Protocol):
    """What a TlsConnection calls; the same shape as asyncio.BufferedProtocol."""

    def connection_made(self, conn: TlsConnection) -> None: ...

    def get_buffer(self) -> memoryview:
        """Where to decrypt the next bytes; its length bounds the read."""
        ...

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` of plaintext were written at the start of the last get_buffer() result."""
        ...

    def eof_received(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class TlsConnection:
    """One TLS connection over a non-blocking SSLSocket, driven by the event loop's selector."""

    __slots__ = (
        "_closed_waiter",
        "_high",
        "_loop",
        "_low",
        "_on_ready",
        "_out",
        "_out_size",
        "_paused_writing",
        "_reading",
        "_retrying",
        "_sock",
        "_state",
        "_timer",
        "_tls",
        "_wants_read_for_write",
        "_writer_on",
        "bytes_in",
        "bytes_out",
        "fd",
        "peername",
        "protocol",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: ssl.SSLSocket,
        protocol: TlsProtocol,
        on_ready: Callable[[TlsConnection, BaseException | None], None] | None = None,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._tls: SslCore = cast(SslCore, sock)  # the C object once the handshake is done
        self.protocol = protocol
        self.fd = sock.fileno()
        try:
            self.peername: tuple[str, int] = sock.getpeername()[:2]
        except OSError:
            self.peername = ("", 0)
        self._state = _HANDSHAKE
        self._out: collections.deque[bytes | bytearray] = collections.deque()
        self._out_size = 0
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_LOW_WATER
        self._paused_writing = False
        self._reading = False
        self._retrying = False
        self._writer_on = False
        self._wants_read_for_write = False
        self._timer: asyncio.TimerHandle | None = None
        self._on_ready = on_ready
        self._closed_waiter: asyncio.Future[None] | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    # ---- handshake -------------------------------------------------------------------------

    def start_handshake(self, timeout: float) -> None:
        """Begin the TLS handshake; the protocol's connection_made follows when it completes."""
        self._timer = self._loop.call_later(timeout, self._handshake_timed_out)
        self._do_handshake()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._state == _HANDSHAKE:
            self._fail(ProtocolError("TLS handshake did not finish in time", code="timeout"))

    def _do_handshake(self) -> None:
        try:
            self._sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(read=True, write=False)
            return
        except ssl.SSLWantWriteError:
            self._watch(read=False, write=True)
            return
        except (ssl.SSLError, OSError) as exc:
            self._fail(exc)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state = _OPEN
        core = getattr(self._sock, "_sslobj", None)
        if core is not None and hasattr(core, "pending"):
            self._tls = core
        self._watch(read=True, write=False)
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready(self, None)
        if self._state == _OPEN:
            self.protocol.connection_made(self)
            if self._reading:
                # The first application data may already sit in OpenSSL's buffer with the
                # client's Finished message; the selector would not report it.
                self._loop.call_soon(self._on_readable)

    def _watch(self, read: bool, write: bool) -> None:
        if read and not self._reading:
            self._loop.add_reader(self.fd, self._on_readable)
            self._reading = True
        elif not read and self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False
        if write and not self._writer_on:
            self._loop.add_writer(self.fd, self._on_writable)
            self._writer_on = True
        elif not write and self._writer_on:
            self._loop.remove_writer(self.fd)
            self._writer_on = False

    # ---- public API -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._state == _OPEN

    @property
    def is_closing(self) -> bool:
        return self._state >= _CLOSING

    def channel_binding(self) -> bytes:
        """The tls-unique channel binding of this session (SPEC 3), after the handshake."""
        binding = self._sock.get_channel_binding("tls-unique")
        if binding is None:
            raise ProtocolError("the TLS session offers no tls-unique binding (is it TLS 1.3?)")
        return binding

    def peer_certificate(self) -> bytes | None:
        """The peer's certificate in DER, if it sent one."""
        return self._sock.getpeercert(binary_form=True)

    def cipher(self) -> tuple[str, str, int] | None:
        return self._sock.cipher()

    def get_write_buffer_size(self) -> int:
        return self._out_size

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"write buffer limits need 0 <= low <= high, got low={low} high={high}")
        self._high, self._low = high, low

    def pause_reading(self) -> None:
        """Stop reading until resume_reading(); the kernel's window then slows the sender (TCP)."""
        if self._state == _OPEN and self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False

    def resume_reading(self) -> None:
        if self._state == _OPEN and not self._reading:
            self._loop.add_reader(self.fd, self._on_readable)
            self._reading = True
            # Decrypted bytes left in OpenSSL's record buffer do not make the socket readable.
            self._loop.call_soon(self._on_readable)

    def is_reading(self) -> bool:
        return self._reading

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``; bytes/bytearray are kept by reference if queued (do not mutate them after),
        a memoryview is copied when it cannot be sent at once (it may point at a scratch buffer)."""
        if self._state != _OPEN:
            return
        size = len(data)
        if not size:
            return
        self.bytes_out += size
        if self._out:
            self._enqueue(data)
            return
        try:
            if size >= CORK_MIN and _TCP_CORK:
                self._write_corked(data)
            else:
                self._tls.write(data)
            return
        except ssl.SSLWantWriteError:
            self._retrying = True
        except ssl.SSLWantReadError:
            self._retrying = True
            self._wants_read_for_write = True
        except (ssl.SSLError, OSError) as exc:
            self._fail(exc)
            return
        # OpenSSL took part of it and must be given the same bytes again (see _flush).
        self._enqueue(data)
        if not self._wants_read_for_write:
            self._watch(read=self._reading, write=True)

    def _write_corked(self, data: bytes | bytearray | memoryview) -> None:
        """One large TLS write under TCP_CORK (see CORK_MIN); uncorked whatever it raises, which
        pushes out what OpenSSL wrote of it."""
        sock = self._sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
        except OSError:
            self._tls.write(data)  # the socket is failing: the write will say how
            return
        try:
            self._tls.write(data)
        finally:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 0)
            except OSError:
                pass  # reset meanwhile: the next read or write reports it

    def _enqueue(self, data: bytes | bytearray | memoryview) -> None:
        item = bytes(data) if isinstance(data, memoryview) else data
        self._out.append(item)
        self._out_size += len(item)
        if not self._paused_writing and self._out_size > self._high:
            self._paused_writing = True
            self.protocol.pause_writing()

    def close(self) -> None:
        """Send what is queued, then TLS close_notify, then close the socket."""
        if self._state >= _CLOSING:
            return
        if self._state == _HANDSHAKE:
            self.abort()
            return
        self._state = _CLOSING
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False
        if not self._out:
            self._finish_close()
            return
        # A peer that stops reading must not keep a closing connection forever.
        self._timer = self._loop.call_later(CLOSE_TIMEOUT, self.abort)
        if not self._writer_on:
            self._watch(read=False, write=True)

    def abort(self, exc: BaseException | None = None) -> None:
        """Close at once, dropping queued data."""
        if self._state == _CLOSED:
            return
        self._teardown(exc, graceful=False)

    async def wait_closed(self) -> None:
        if self._state == _CLOSED:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()
        await asyncio.shield(self._closed_waiter)

    # ---- selector callbacks -----------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._state == _HANDSHAKE:
            self._do_handshake()
            return
        if self._wants_read_for_write:
            self._wants_read_for_write = False
            self._flush()
        if not self._reading:
            return
        tls = self._tls
        protocol = self.protocol
        for _ in range(READS_PER_CALLBACK):
            buf = protocol.get_buffer()
            try:
                nbytes = tls.read(len(buf), buf)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:
                # Only a renegotiation (refused on our server contexts) can make a read wait
                # for writability: wait for it and read again then.
                self._watch(read=False, write=True)
                return
            except (ssl.SSLError, OSError) as exc:
                self._fail(exc)
                return
            if nbytes == 0:
                self._eof()
                return
            self.bytes_in += nbytes
            protocol.buffer_updated(nbytes)
            if not self._reading:
                return
            if nbytes < MAX_RECORD and nbytes < len(buf) and not tls.pending():
                # A short record usually ends a burst: let epoll say whether more came instead
                # of paying a read that finds the socket empty. Full records (bulk data) are
                # read on without going back to the loop.
                return
        if tls.pending():
            # Decrypted bytes left in OpenSSL do not make the socket readable: come back.
            self._loop.call_soon(self._on_readable)

    def _on_writable(self) -> None:
        if self._state == _HANDSHAKE:
            self._do_handshake()
            return
        if not self._out:
            # A read that waited for writability (renegotiation).
            self._watch(read=self._state == _OPEN, write=False)
            self._on_readable()
            return
        self._flush()

    def _flush(self) -> None:
        out = self._out
        tls = self._tls
        while out:
            if not self._retrying and len(out) > 1 and len(out[0]) < COALESCE_LIMIT:
                self._coalesce()
            head = out[0]
            try:
                if len(head) >= CORK_MIN and _TCP_CORK:
                    self._write_corked(head)
                else:
                    tls.write(head)
            except ssl.SSLWantWriteError:
                # OpenSSL must be given the same bytes again (CPython allows a moving buffer).
                self._retrying = True
                if not self._writer_on:
                    self._watch(read=self._reading, write=True)
                return
            except ssl.SSLWantReadError:
                self._retrying = True
                self._wants_read_for_write = True
                return
            except (ssl.SSLError, OSError) as exc:
                self._fail(exc)
                return
            self._retrying = False
            out.popleft()
            self._out_size -= len(head)
            if self._paused_writing and self._out_size <= self._low:
                self._paused_writing = False
                self.protocol.resume_writing()
                if self._state == _CLOSED:
                    return
        if self._writer_on:
            self._watch(read=self._reading, write=False)
        if self._state == _CLOSING:
            self._finish_close()

    def _coalesce(self) -> None:
        out = self._out
        parts: list[bytes | bytearray] = []
        total = 0
        while out and total + len(out[0]) <= COALESCE_LIMIT:
            item = out.popleft()
            parts.append(item)
            total += len(item)
        if not parts:
            return
        out.appendleft(b"".join(parts) if len(parts) > 1 else parts[0])

    # ---- closing ----------------------------------------------------------------------------

    def _eof(self) -> None:
        self.protocol.eof_received()
        self._teardown(None, graceful=False)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, ssl.SSLError | ConnectionError):
            _log.debug("TLS connection from %s failed: %s", self.peername, exc)
        else:
            _log.debug("TLS connection from %s failed: %r", self.peername, exc)
        self._teardown(exc, graceful=False)

    def _finish_close(self) -> None:
        self._teardown(None, graceful=True)

    def _teardown(self, exc: BaseException | None, graceful: bool) -> None:
        if self._state == _CLOSED:
            return
        was_open = self._state != _HANDSHAKE
        self._state = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watch(read=False, write=False)
        if graceful:
            try:
                # One best-effort close_notify; the peer's own close_notify is not awaited.
                self._sock.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
        self._sock.close()
        self._out.clear()
        self._out_size = 0
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready(self, exc or ConnectionResetError("connection closed during the TLS handshake"))
        if was_open:
            try:
                self.protocol.connection_lost(exc)
            except Exception:
                _log.exception("connection_lost handler failed")
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)
