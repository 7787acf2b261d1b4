"""The pieces of the TLS transport (chrnode.edge.tlsconn) that lower modules share: the scratch
buffer and the calls made on OpenSSL's socket object. (TlsProtocol, what the transport calls on
its protocol, lives beside TlsConnection in tlsconn, which it names; so this module imports
nothing of the transport.)

A protocol receives plaintext the way ``asyncio.BufferedProtocol`` does: it hands out the buffer
to decrypt into (``get_buffer``) and learns how much arrived (``buffer_updated``). Protocols that
have nothing of their own to fill (no partial frame) hand out the per-thread scratch buffer, so
an idle connection owns no receive buffer at all (SPEC 13).
"""

from __future__ import annotations

import threading
from typing import Protocol

__all__ = ["SCRATCH_SIZE", "SslCore", "scratch_buffer"]

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
