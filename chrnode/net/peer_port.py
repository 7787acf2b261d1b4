"""The peer port (SPEC 4): the inbound side of the peer network (chrnode.net.peers).

:class:`PeerPort` listens on the peer port and admits inbound connections through the edge's
admission control (chrnode.edge.admission): a token bucket of new links per source address, caps
per source address, per /24 and in all; a deadline from TCP accept to a proven peer hello; when a
cap is reached, the oldest silent unproven connection is shed. Proven links are never shed (the
pool decides which of them to keep). Under pressure it logs one line a minute at most, with counts.

The network that owns the port (chrnode.net.peers.PeerNetwork) is the host of its links; it tells
the admission when a link is proven or closed, and calls ``tick`` on its timer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable

from chrnode.edge.admission import Admission, AdmissionLimits, Refuse
from chrnode.edge.ratelimit import KeyedBuckets
from chrnode.edge.tlslisten import TlsListener, start_tls_server
from chrnode.peer.link import LinkConfig, LinkHost, PeerLink

__all__ = ["PeerPort"]

_log = logging.getLogger("chrnode.peer")

PRESSURE_LOG_INTERVAL = 60.0


class PeerPort:
    """The peer port's listener and the admission of its connections until their peer hello.

    ``track`` is given each new inbound link (the network closes them all with itself)."""

    def __init__(
        self,
        host: LinkHost,
        *,
        server_ctx: ssl.SSLContext,
        link_config: LinkConfig,
        handshake_timeout: float,
        accepts_per_second: float,
        limits: AdmissionLimits,
        track: Callable[[PeerLink], None],
    ) -> None:
        self.host = host
        self.loop = host.loop
        self._server_ctx = server_ctx
        self._link_config = link_config
        self._handshake_timeout = handshake_timeout
        self._accepts = KeyedBuckets(accepts_per_second, accepts_per_second)  # new links per address
        self.admission: Admission[PeerLink] = Admission(limits)
        self._deadline = limits.pending_timeout  # seconds from TCP accept to a proven peer hello
        self._track = track
        self.listener: TlsListener | None = None
        self.closing = False
        self.refused = 0

    def listen(self, host: str, port: int) -> int:
        self.listener = listener = start_tls_server(
            self.loop, self._server_ctx, host, port, self._accept, self._handshake_timeout
        )
        listener.on_failed = self.admission.closed
        listener.on_spoke = self.admission.progressed  # type: ignore[assignment]
        return listener.port

    def _accept(self, addr: tuple[str, int]) -> PeerLink | None:
        # Per source address: a token bucket of new links, before any TLS work (SPEC 4 "per-peer
        # rate limits"); then admission, which gives the connection its deadline to a proven hello.
        if self.closing or not self._accepts.take(addr[0]):
            self.refused += 1
            return None
        link = PeerLink(self.host, self._link_config)
        decision = self.admission.accept(link, addr[0], self.loop.time())
        if isinstance(decision, Refuse):
            self.refused += 1
            self._log_pressure()
            return None  # the group is full of proven links: not even a TLS handshake
        for victim in decision.shed:
            self._cut(victim, "the peer port is full and this connection had not proven a peer hello")
        if decision.shed:
            self._log_pressure()
        # Unproven when it closes (a bad hello, a timeout): it leaves the accounting at once.
        link.ready.add_done_callback(functools.partial(self._unproven_closed, link))
        self._track(link)
        return link

    def _unproven_closed(self, link: PeerLink, ready: asyncio.Future[PeerLink]) -> None:
        if ready.cancelled() or ready.exception() is not None:
            self.admission.closed(link)

    def _cut(self, link: PeerLink, reason: str) -> None:
        """Close an unproven inbound connection admission gave up on (in TLS, or before its hello)."""
        _log.debug("cutting an unproven peer connection: %s", reason)
        if link.conn is not None:
            link.close()
        elif self.listener is not None:
            self.listener.abort_handshake(link)

    def _log_pressure(self) -> None:
        """One line a minute at most, with counts, however hard the peer port is pushed."""
        report = self.admission.pressure_report(self.loop.time(), PRESSURE_LOG_INTERVAL)
        if report is not None:
            _log.warning(
                "peer port admission under pressure: %d connections shed, %d refused, %d cut at the "
                "%g s hello deadline since the last report; %d open, %d of them without a peer hello",
                *report,
                self._deadline,
                len(self.admission),
                self.admission.pending_count,
            )

    def tick(self, now: float) -> None:
        """The network's timer: connections past their hello deadline are cut."""
        for link in self.admission.tick(now):
            self._cut(link, f"no proven peer hello within {self._deadline:g} s of connecting")
        self._log_pressure()

    def close(self) -> None:
        """No more connections are admitted; the listener closes."""
        self.closing = True
        if self.listener is not None:
            self.listener.close()
