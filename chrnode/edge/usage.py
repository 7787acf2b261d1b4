"""Usage per device per epoch and the tickets that pay for it (SPEC 5).

Every byte a device's session reads or writes (frames, headers included) counts as its usage in
the current epoch; relayed port data is therefore billed to both devices. A device's account
outlives its sessions (a reconnect in the same epoch continues the count) and keeps the best
ticket per (fleet, epoch), loaded once from the TicketStore through the hooks.

:class:`TicketDesk` runs :class:`chrnode.ticket.TicketValidator` with the asynchronous hooks of
steps 4 (fleet) and 6 (payment) while keeping the SPEC's order of failures: steps 1-3 are checked
before any chain read, step 5 before the payment check.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from chrnode.edge.hooks import EdgeHooks
from chrnode.ticket import Ticket, TicketAccepted, TicketValidator

__all__ = ["DeviceAccount", "TicketDesk"]


class DeviceAccount:
    """Bytes used and tickets held by one device on this node."""

    __slots__ = ("_lock", "best", "device", "loaded", "usage")

    def __init__(self, device: bytes) -> None:
        self.device = device
        self.usage: dict[int, int] = {}  # epoch -> bytes
        self.best: dict[tuple[bytes, int], Ticket] = {}  # (fleet, epoch) -> best ticket
        self.loaded: set[tuple[bytes, int]] = set()
        self._lock: asyncio.Lock | None = None

    @property
    def lock(self) -> asyncio.Lock:
        """Serialises ticket validation for this device (two tickets must not race on `best`)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def add_usage(self, epoch: int, nbytes: int) -> None:
        self.usage[epoch] = self.usage.get(epoch, 0) + nbytes

    def paid(self, epoch: int) -> int:
        """Bytes covered by tickets in ``epoch`` (each fleet pays its own tickets)."""
        return sum(t.total_bytes for (_fleet, e), t in self.best.items() if e == epoch)

    def uncovered(self, epoch: int) -> int:
        return self.usage.get(epoch, 0) - self.paid(epoch)

    def forget_before(self, epoch: int) -> None:
        """Drop usage and tickets of epochs older than ``epoch`` (no longer accepted, SPEC 5 step 1)."""
        for e in [e for e in self.usage if e < epoch]:
            del self.usage[e]
        for key in [k for k in self.best if k[1] < epoch]:
            del self.best[key]
        self.loaded = {k for k in self.loaded if k[1] >= epoch}

    def idle(self) -> bool:
        return not self.usage and not self.best


class _DeferredError(Exception):
    """Internal: the validator reached a step whose answer must be fetched asynchronously."""


class _AskLater:
    """FleetCheck/PaymentCheck that stops the validator at its step (so earlier steps run first)."""

    def node_allowed(self, fleet: bytes, node: bytes) -> bool:
        raise _DeferredError

    def device_allowed(self, fleet: bytes, device: bytes) -> bool:
        raise _DeferredError

    def check_payment(self, ticket: Ticket, device: bytes) -> None:
        raise _DeferredError


@dataclass(frozen=True, slots=True)
class _FleetAnswer:
    node_ok: bool
    device_ok: bool

    def node_allowed(self, fleet: bytes, node: bytes) -> bool:
        return self.node_ok

    def device_allowed(self, fleet: bytes, device: bytes) -> bool:
        return self.device_ok


class TicketDesk:
    """Validates tickets for one node with the hooks, and records the accepted ones."""

    def __init__(self, node: bytes, chain_id: int, hooks: EdgeHooks, max_jump_bytes: int) -> None:
        self.node = node
        self.chain_id = chain_id
        self.hooks = hooks
        self.max_jump_bytes = max_jump_bytes
        self._ask_later = _AskLater()
        self._first = TicketValidator(
            node,
            chain_id,
            fleet_check=self._ask_later,
            payment_check=self._ask_later,
            max_jump_bytes=max_jump_bytes,
        )

    async def stored(self, account: DeviceAccount, fleet: bytes, epoch: int) -> Ticket | None:
        key = (fleet, epoch)
        if key not in account.loaded:
            loaded = await self.hooks.load_best_ticket(account.device, fleet, epoch)
            account.loaded.add(key)
            current = account.best.get(key)
            if loaded is not None and (current is None or current.is_lower_than(loaded)):
                account.best[key] = loaded
        return account.best.get(key)

    async def submit(self, account: DeviceAccount, ticket: Ticket, current_epoch: int) -> TicketAccepted:
        """Validate ``ticket`` for ``account``'s device; on success store it as the best one.

        Raises TicketError (TicketTooLowError carries the stored ticket) from the failing step.
        """
        async with account.lock:
            device = account.device
            try:
                # Steps 1-3 (no I/O) before anything is read: a ticket of a wrong epoch, signer or
                # node never reaches the TicketStore. The validator stops at step 4 (the chain).
                self._first.validate(ticket, device, current_epoch, None)
            except _DeferredError:
                pass
            stored = await self.stored(account, ticket.fleet, ticket.epoch)
            node_ok, device_ok = await self.hooks.fleet_check(ticket.fleet, self.node, device)
            second = TicketValidator(
                self.node,
                self.chain_id,
                fleet_check=_FleetAnswer(node_ok, device_ok),
                payment_check=self._ask_later,
                max_jump_bytes=self.max_jump_bytes,
            )
            try:
                second.validate(ticket, device, current_epoch, stored)  # steps 4 and 5
            except _DeferredError:
                pass
            await self.hooks.payment_check(ticket, device)  # step 6
            accepted = TicketAccepted(
                ticket,
                ticket.total_bytes - (stored.total_bytes if stored else 0),
                ticket.total_connections - (stored.total_connections if stored else 0),
            )
            return await self._accept(account, accepted)

    async def _accept(self, account: DeviceAccount, accepted: TicketAccepted) -> TicketAccepted:
        ticket = accepted.ticket
        await self.hooks.store_ticket(ticket, account.device)  # persisted before it counts
        account.best[(ticket.fleet, ticket.epoch)] = ticket
        return accepted
