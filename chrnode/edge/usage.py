"""Usage per device per epoch and the tickets that pay for it (SPEC 5).

Every byte a device's session reads or writes (frames, headers included) counts as its usage in
the current epoch; relayed port data is therefore billed to both devices. A device's account
outlives its sessions (a reconnect in the same epoch continues the count) and keeps the best
ticket per (fleet, epoch), loaded once from the TicketStore through the hooks.

:class:`TicketDesk` runs the steps of :class:`chrnode.ticket.TicketValidator` once each, awaiting
the asynchronous hooks of steps 4 (fleet) and 6 (payment) in between, so it keeps the SPEC's order
of failures: steps 1-3 (the signature recovered once) before any read, step 5 before the payment
check.
"""

from __future__ import annotations

import asyncio

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


class TicketDesk:
    """Validates tickets for one node with the hooks, and records the accepted ones."""

    def __init__(self, node: bytes, chain_id: int, hooks: EdgeHooks, max_jump_bytes: int) -> None:
        self.node = node
        self.chain_id = chain_id
        self.hooks = hooks
        self.max_jump_bytes = max_jump_bytes
        # Its steps only: the fleet's and the payment's answers come from the hooks, awaited here.
        self.validator = TicketValidator(node, chain_id, max_jump_bytes=max_jump_bytes)

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
            steps = self.validator
            # Steps 1-3 (no I/O, the one signature recovery) before anything is read: a ticket of
            # a wrong epoch, signer or node never reaches the TicketStore or the chain.
            steps.check_signed(ticket, device, current_epoch)
            stored = await self.stored(account, ticket.fleet, ticket.epoch)
            node_ok, device_ok = await self.hooks.fleet_check(ticket.fleet, self.node, device)
            steps.check_fleet(ticket, device, node_ok, device_ok)  # step 4
            accepted = steps.check_totals(ticket, stored)  # step 5
            await self.hooks.payment_check(ticket, device)  # step 6
            return await self._accept(account, accepted)

    async def _accept(self, account: DeviceAccount, accepted: TicketAccepted) -> TicketAccepted:
        ticket = accepted.ticket
        await self.hooks.store_ticket(ticket, account.device)  # persisted before it counts
        account.best[(ticket.fleet, ticket.epoch)] = ticket
        return accepted
