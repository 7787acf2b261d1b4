"""Dialling peers (SPEC 4): the outbound side of the peer network (chrnode.net.peers).

:class:`Dialer` carries out the pool's ``Dial`` actions (chrnode.peer.pool): a TLS connection and
a peer hello to the address the pool names, within ``timeout`` seconds, at most one dial per peer
at once. ``connect()`` gives the link a peer has, or dials it on demand (a DHT request, a relay);
a connect() that finds every dial slot taken (PoolConfig.max_dials) waits for one to free. A
dial is over when its link is proven and the choice between two links to the peer (both dialled
at once, chrnode.peer.twins) is settled: its connect() is given the link kept, or the error.

The network that owns the dialler (chrnode.net.peers.PeerNetwork) hands it the pool, the twins,
its links and the way to carry out the pool's actions; it tells the dialler when a dial is over
(``over``) and when the twins' choice settles (``settled``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from chrnode.edge import codes
from chrnode.edge.tlslisten import open_tls_connection
from chrnode.peer.link import LinkConfig, LinkHost, PeerLink
from chrnode.peer.link_send import PeerError
from chrnode.peer.pool import Dial, Pool, State
from chrnode.peer.twins import Twins

__all__ = ["Dialer"]

_log = logging.getLogger("chrnode.peer")


class Dialer:
    """The dials of one peer network in progress, and the connect()s waiting for a dial slot.

    ``act`` carries out the pool's actions; ``track`` is given each new outbound link (the
    network closes them all with itself)."""

    def __init__(
        self,
        host: LinkHost,
        pool: Pool,
        twins: Twins[PeerLink],
        links: Mapping[bytes, PeerLink],
        *,
        client_ctx: ssl.SSLContext,
        link_config: LinkConfig,
        timeout: float,
        act: Callable[[list[Any]], None],
        track: Callable[[PeerLink], None],
    ) -> None:
        self.host = host
        self.loop = host.loop
        self.pool = pool
        self.twins = twins
        self.links = links
        self._client_ctx = client_ctx
        self._link_config = link_config
        self.timeout = timeout  # TCP connect to the peer's hello answer (PeerNetworkConfig.dial_timeout)
        self._act = act
        self._track = track
        self._dials: dict[bytes, tuple[asyncio.Future[PeerLink], PeerLink]] = {}  # in progress
        self._queued: dict[bytes, asyncio.Future[PeerLink]] = {}  # connect()s awaiting a dial slot
        self.dials = 0  # outbound dials started (each a TLS handshake and a peer hello)

    async def connect(self, address: bytes, host: str, port: int) -> PeerLink:
        """The link to ``address`` (reused, or dialled now); PeerError if it cannot be had."""
        link = self.links.get(address)
        if link is not None and not link.closed:
            return link
        if address == self.host.key.address:
            raise PeerError("a node does not dial itself", codes.BAD_PAYLOAD)
        dial = self._dials.get(address)
        if dial is not None:
            future = dial[0]
        else:
            actions = self.pool.want(address, host, port, self.loop.time())
            peer = self.pool.peers.get(address)
            if not any(isinstance(a, Dial) for a in actions) and (
                peer is None or peer.state is not State.WAITING
            ):
                self.pool.done_with(address)  # not dialled (backing off): this need ends here
                state = peer.state.value if peer is not None else "unknown"
                raise PeerError(f"no link to 0x{address.hex()} now ({state})", codes.UNAVAILABLE)
            self._act(actions)
            dial = self._dials.get(address)
            if dial is not None:
                future = dial[0]
            else:  # every dial slot is taken: the pool dials it once one frees
                future = self._queued.setdefault(address, self.loop.create_future())
        try:
            if dial is not None:
                return await asyncio.shield(future)
            try:
                # A slot frees within one dial deadline (every dial ends by its own), then ours.
                return await asyncio.wait_for(asyncio.shield(future), 2 * self.timeout)
            except TimeoutError:
                if self._queued.get(address) is future:
                    del self._queued[address]
                raise PeerError(
                    f"no link to 0x{address.hex()}: no dial done within {2 * self.timeout:g} s",
                    codes.UNAVAILABLE,
                ) from None
        finally:
            # One dial per need: a peer that is not pinned is not redialled after its link
            # closes or its dial failed (a dead DHT contact would be, for ever, with backoff).
            self.pool.done_with(address)

    def dial(self, action: Dial) -> None:
        """Carry out the pool's ``Dial`` (nothing if that peer is being dialled already)."""
        if action.address in self._dials:
            return
        # A connect() that waited for a dial slot is given this dial's outcome.
        future = self._queued.pop(action.address, None)
        if future is None:
            future = self.loop.create_future()
        link = PeerLink(self.host, self._link_config, expected=action.address)
        self._dials[action.address] = (future, link)
        task = self.loop.create_task(self._dial_now(action, link))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _connect_and_hello(self, action: Dial, link: PeerLink) -> None:
        await open_tls_connection(action.host, action.port, self._client_ctx, link, self.timeout)
        await asyncio.shield(link.ready)

    async def _dial_now(self, action: Dial, link: PeerLink) -> None:
        self.dials += 1
        self._track(link)
        try:
            await asyncio.wait_for(self._connect_and_hello(action, link), self.timeout)
        except (OSError, ssl.SSLError, TimeoutError, PeerError) as exc:
            link.close()
            _log.debug("dial 0x%s at %s:%d failed: %s", action.address.hex(), action.host, action.port, exc)
            kept = self.twins.link(action.address)
            if kept is not None and not kept.closed:  # the peer's own dial gave us a link meanwhile
                if self.twins.settled(action.address):
                    self.over(action.address, kept)
                return  # else the link kept is given when the choice settles
            self._act(self.pool.dial_failed(action.address, self.loop.time()))
            self.over(
                action.address, PeerError(f"cannot reach 0x{action.address.hex()}: {exc}", codes.UNAVAILABLE)
            )
        # Proven: link_up gave the dial its outcome (the link kept), or gives it once the peer's
        # choice between two links settles (chrnode.peer.twins).

    def settled(self, node: bytes, link: PeerLink) -> None:
        """The twins' choice for ``node`` settled on ``link``: a connect() waiting for a dial slot
        (the peer dialled us) and our dial, once proven, are given it."""
        queued = self._queued.pop(node, None)
        if queued is not None and not queued.done():
            queued.set_result(link)
        dial = self._dials.get(node)
        if dial is not None and dial[1].ready.done():
            self.over(node, link)

    def over(self, node: bytes, outcome: PeerLink | PeerError) -> None:
        """Our dial to ``node`` is over: connect() is given the link kept, or the error."""
        entry = self._dials.pop(node, None)
        if entry is None or entry[0].done():
            return
        if isinstance(outcome, PeerError):
            entry[0].set_exception(outcome)
            entry[0].exception()
        else:
            entry[0].set_result(outcome)

    def cancel(self) -> None:
        """The network closes: every connect() waiting on a dial is cancelled."""
        for future, _ in self._dials.values():
            future.cancel()
        for future in self._queued.values():
            future.cancel()
