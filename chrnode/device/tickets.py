"""Automatic tickets for the device client (SPEC 5): pay a little ahead of what the node counts.

The node counts every byte of the session (frames both ways) per epoch, across sessions. The
client estimates the same count as ``base + own traffic`` where ``base`` is what the node told it
beyond its own counters (a ``ticket_request``'s usage, a ``too_low`` answer's stored ticket). It
signs a ticket for ``estimate + advance`` right after hello, again whenever its coverage runs low,
and at once when the node sends ``ticket_request``. Tickets never go down (they are cumulative).
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from chrnode.crypto import PrivateKey
from chrnode.edge.messages import Message, TicketMsg, TicketReply
from chrnode.errors import ChrError, ConnectionClosed, describe
from chrnode.ticket import Ticket

__all__ = ["TicketAgent", "TicketChannel"]

_log = logging.getLogger("chrnode.client")

MIN_ADVANCE = 8 * 1024 * 1024  # bytes paid ahead of the estimate
MAX_ADVANCE = 1024 * 1024 * 1024


class TicketChannel(Protocol):
    """What the agent needs of the connection it pays for (the DeviceClient implements it)."""

    @property
    def key(self) -> PrivateKey: ...
    @property
    def address(self) -> bytes: ...
    @property
    def node(self) -> bytes: ...
    @property
    def chain_id(self) -> int: ...
    def traffic(self) -> int: ...
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...
    async def request(self, msg: Message) -> Message: ...


class TicketAgent:
    """Keeps one device's tickets ahead of its usage on one connection."""

    def __init__(
        self, client: TicketChannel, fleet: bytes, epoch: int, min_advance: int = MIN_ADVANCE
    ) -> None:
        self.client = client
        self.fleet = fleet
        self.epoch = epoch
        self.min_advance = min_advance
        self.paid = 0  # total_bytes of the last accepted ticket in this epoch
        self.base = 0  # node-counted bytes not in this connection's counters
        self.connections = 1
        self.sent = 0
        self.last_error: ChrError | None = None
        self._inflight = False
        self._next_at = 0  # traffic at which coverage is checked again

    def estimate(self) -> int:
        return self.base + self.client.traffic()

    def _advance(self, estimate: int) -> int:
        return min(MAX_ADVANCE, max(self.min_advance, estimate // 4))

    def traffic_changed(self, traffic: int) -> None:
        """Called on traffic; cheap unless the coverage is running low."""
        if traffic < self._next_at or self._inflight:
            return
        estimate = self.base + traffic
        advance = self._advance(estimate)
        if self.paid - estimate < advance // 2:
            self.client.spawn(self.send())
        self._next_at = traffic + advance // 4

    def ticket_requested(self, usage: int, epoch: int) -> None:
        """The node's ticket_request: it counts ``usage`` bytes in ``epoch``."""
        if epoch != self.epoch:
            self.epoch, self.paid, self.base = epoch, 0, 0
        self.base = max(self.base, usage - self.client.traffic())
        if not self._inflight:
            self.client.spawn(self.send(minimum=usage))

    async def send(self, minimum: int = 0) -> TicketReply | None:
        """Sign and send a ticket covering the estimate plus an advance; retried once on too_low."""
        if self._inflight:
            return None
        self._inflight = True
        try:
            for _ in range(3):
                estimate = max(self.estimate(), minimum)
                total = max(estimate + self._advance(estimate), self.paid)
                reply = await self.client.request(TicketMsg(ticket=self._sign(total)))
                assert isinstance(reply, TicketReply)
                self.sent += 1
                if reply.status == "thanks":
                    self.paid = max(self.paid, reply.paid_bytes or total)
                    self.last_error = None
                    return reply
                latest = reply.latest
                if latest is None or latest.epoch != self.epoch:
                    return reply
                # The node holds a higher ticket (an earlier connection): continue above it.
                self.paid = max(self.paid, latest.total_bytes)
                self.connections = max(self.connections, latest.total_connections + 1)
                minimum = max(minimum, latest.total_bytes)
            return None
        except ConnectionClosed as exc:
            # Not a refusal: the connection ended with the ticket in flight (the client closing
            # after a ping, or the node closing, which the client reports as its close reason).
            _log.debug("ticket for device 0x%s not answered: %s", self.client.address.hex(), exc)
            return None
        except ChrError as exc:
            self.last_error = exc
            # Retry on the node's ticket_request or after more traffic, not on the next frame:
            # a refusal (fleet, chain, payment) does not change by itself within milliseconds.
            traffic = self.client.traffic()
            self._next_at = traffic + self._advance(self.base + traffic)
            _log.warning("ticket refused: %s", describe(exc))
            return None
        finally:
            self._inflight = False

    def _sign(self, total_bytes: int) -> Ticket:
        client = self.client
        ticket = Ticket(
            chain_id=client.chain_id,
            epoch=self.epoch,
            node=client.node,
            fleet=self.fleet,
            total_connections=self.connections,
            total_bytes=total_bytes,
        )
        return ticket.sign(client.key)
