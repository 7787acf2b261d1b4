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
- Writes go to OpenSSL at once; only what the socket cannot take is queued, with high/low water
  marks that pause and resume the protocol's writing (the write side: chrnode.edge.tlswrite).
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
import logging
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from chrnode.edge.tlsbase import SslCore, scratch_buffer
from chrnode.edge.tlswrite import (
    _CLOSED,
    _CLOSING,
    _HANDSHAKE,
    _OPEN,
    CORK_MIN,
    DEFAULT_HIGH_WATER,
    DEFAULT_LOW_WATER,
    TlsWriteSide,
)
from chrnode.errors import ProtocolError

# scratch_buffer re-exported from tlsbase, the write side's constants from tlswrite
__all__ = [
    "CORK_MIN",
    "DEFAULT_HIGH_WATER",
    "DEFAULT_LOW_WATER",
    "TlsConnection",
    "TlsProtocol",
    "scratch_buffer",
]

_log = logging.getLogger("chrnode.edge")

CLOSE_TIMEOUT = 10.0  # seconds to flush queued data on close() before the socket is cut
MAX_RECORD = 16 * 1024  # TLS plaintext record limit: a full record hints at more data behind it
READS_PER_CALLBACK = 32  # then yield to other connections (fairness), at most ~512 KiB per turn


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


class TlsConnection(TlsWriteSide):
    """One TLS connection over a non-blocking SSLSocket, driven by the event loop's selector."""

    __slots__ = (
        "_closed_waiter",
        "_loop",
        "_on_ready",
        "_reading",
        "_sock",
        "_state",
        "_timer",
        "_tls",
        "_writer_on",
        "bytes_in",
        "fd",
        "peername",
        "protocol",
    )

    protocol: TlsProtocol

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
        self._reading = False
        self._writer_on = False
        self._timer: asyncio.TimerHandle | None = None
        self._on_ready = on_ready
        self._closed_waiter: asyncio.Future[None] | None = None
        self.bytes_in = 0
        super().__init__()

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
