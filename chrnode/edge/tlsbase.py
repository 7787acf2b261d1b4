"""What the TLS transport (chrnode.edge.tlsconn) expects of its protocols, and the scratch buffer.

A protocol receives plaintext the way ``asyncio.BufferedProtocol`` does: it hands out the buffer
to decrypt into (``get_buffer``) and learns how much arrived (``buffer_updated``). Protocols that
have nothing of their own to fill (no partial frame) hand out the per-thread scratch buffer, so
an idle connection owns no receive buffer at all (SPEC 13).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from chrnode.edge.tlsconn import TlsConnection

__all__ = ["SCRATCH_SIZE", "SslCore", "TlsProtocol", "scratch_buffer"]

SCRATCH_SIZE = 64 * 1024  # one TLS record is at most 16 KiB; room for a few small frames per read


class _ThreadState(threading.local):
    """The per-thread (so per event loop) scratch read buffer."""

    def __init__(self) -> None:
        self.scratch = bytearray(SCRATCH_SIZE)
        self.scratch_view = memoryview(self.scratch)


_thread = _ThreadState()


def scratch_buffer() -> memoryview:
    """The shared read buffer of this thread. Data in it is valid only until the next read."""
    return _thread.scratch_view


class SslCore(Protocol):
    """The calls made on ``_ssl._SSLSocket`` (or, before the handshake, on ssl.SSLSocket)."""

    def read(self, size: int, buffer: memoryview) -> int: ...

    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    def pending(self) -> int: ...


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
