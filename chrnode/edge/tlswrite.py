"""The write side of the TLS transport (chrnode.edge.tlsconn): writes straight to OpenSSL, the
queue of what the socket could not take, its water marks, and corking of large writes.

- Writes go to OpenSSL at once (latency: a relayed small message costs one TLS write); only
  what the socket cannot take is queued, as bytes objects, and small queued pieces are joined
  into one TLS write when the socket drains. The queue has high/low water marks that call
  ``pause_writing`` / ``resume_writing`` on the protocol, which the relay uses to pause the
  senders feeding a slow reader instead of buffering without bound.
- A write of ``CORK_MIN`` or more is made under TCP_CORK (see there).

``TlsWriteSide`` is the base of ``TlsConnection``, which owns the socket, the selector
registrations and the connection's state; the hooks it implements are declared here.
"""

from __future__ import annotations

import collections
import socket
import ssl
from typing import Protocol

from chrnode.edge.tlsbase import SslCore

__all__ = ["CORK_MIN", "DEFAULT_HIGH_WATER", "DEFAULT_LOW_WATER", "TlsWriteSide"]

COALESCE_LIMIT = 64 * 1024  # small queued writes are joined up to this size into one TLS write
DEFAULT_HIGH_WATER = 512 * 1024
DEFAULT_LOW_WATER = 128 * 1024

# A write this large (a big port frame: OpenSSL writes it as one 16 KiB record per send) is
# corked (TCP_CORK) while OpenSSL writes it, so the kernel sends it in full segments and the
# reader is woken for a few segments, not once per record; small writes are never delayed.
CORK_MIN = 64 * 1024
_TCP_CORK: int = getattr(socket, "TCP_CORK", 0)  # Linux; elsewhere the records go as they come

# The connection's states (TlsConnection moves through them in this order).
_HANDSHAKE, _OPEN, _CLOSING, _CLOSED = 0, 1, 2, 3


class _WriteListener(Protocol):
    """What the write side calls on the connection's protocol (a part of TlsProtocol)."""

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class TlsWriteSide:
    """The write path of a TlsConnection; the subclass sets the socket state it reads and
    implements the hooks at the end."""

    __slots__ = (
        "_high",
        "_low",
        "_out",
        "_out_size",
        "_paused_writing",
        "_retrying",
        "_wants_read_for_write",
        "bytes_out",
    )

    # Set by the subclass (TlsConnection).
    _sock: ssl.SSLSocket
    _tls: SslCore
    _state: int
    _reading: bool
    _writer_on: bool
    protocol: _WriteListener

    def __init__(self) -> None:
        self._out: collections.deque[bytes | bytearray] = collections.deque()
        self._out_size = 0
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_LOW_WATER
        self._paused_writing = False
        self._retrying = False
        self._wants_read_for_write = False
        self.bytes_out = 0

    # ---- hooks of the connection ----------------------------------------------------------

    def _watch(self, read: bool, write: bool) -> None:
        raise NotImplementedError

    def _fail(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _finish_close(self) -> None:
        raise NotImplementedError

    # ---- public API -------------------------------------------------------------------------

    def get_write_buffer_size(self) -> int:
        return self._out_size

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"write buffer limits need 0 <= low <= high, got low={low} high={high}")
        self._high, self._low = high, low

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

    # ---- draining the queue -----------------------------------------------------------------

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
