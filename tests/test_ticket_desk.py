"""The edge port's ticket desk (chrnode.edge.usage.TicketDesk): the steps of SPEC 5 run once each,
with the asynchronous fleet and payment answers awaited in between. Checked against the
synchronous TicketValidator (same outcome, same code, same added bytes) with generated tickets,
and counting signature recoveries: one per ticket that gets past step 1, never two. The same desk
on real sockets: tests/test_edge_tickets.py."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

import chrnode.ticket
from chrnode.crypto import PrivateKey
from chrnode.edge import codes
from chrnode.edge.hooks import DefaultHooks
from chrnode.edge.usage import DeviceAccount, TicketDesk
from chrnode.errors import TicketError
from chrnode.testing.crypto import DEFAULT_FLEET, signed_ticket
from chrnode.ticket import Ticket, TicketAccepted, TicketValidator

NODE = PrivateKey.from_bytes(b"\x11" * 32)
DEVICE = PrivateKey.from_bytes(b"\x22" * 32)
OTHER = PrivateKey.from_bytes(b"\x33" * 32)
CHAIN = 31337
EPOCH = 689
MAX_JUMP = 1 << 30


class Hooks(DefaultHooks):
    """In-memory hooks with set fleet and payment answers, recording which were asked."""

    def __init__(self, node_ok: bool, device_ok: bool, payment: str | None) -> None:
        super().__init__(epoch=EPOCH)
        self.node_ok, self.device_ok, self.payment = node_ok, device_ok, payment
        self.asked: list[str] = []

    async def load_best_ticket(self, device: bytes, fleet: bytes, epoch: int) -> Ticket | None:
        self.asked.append("store")
        return await super().load_best_ticket(device, fleet, epoch)

    async def fleet_check(self, fleet: bytes, node: bytes, device: bytes) -> tuple[bool, bool]:
        self.asked.append("fleet")
        return self.node_ok, self.device_ok

    async def payment_check(self, ticket: Ticket, device: bytes) -> None:
        self.asked.append("payment")
        if self.payment is not None:
            raise TicketError(self.payment, "payment not proven")


class Fleet:
    def __init__(self, node_ok: bool, device_ok: bool) -> None:
        self.node_ok, self.device_ok = node_ok, device_ok

    def node_allowed(self, fleet: bytes, node: bytes) -> bool:
        return self.node_ok

    def device_allowed(self, fleet: bytes, device: bytes) -> bool:
        return self.device_ok


class Payment:
    def __init__(self, code: str | None) -> None:
        self.code = code

    def check_payment(self, ticket: Ticket, device: bytes) -> None:
        if self.code is not None:
            raise TicketError(self.code, "payment not proven")


@contextmanager
def counting_recoveries() -> Iterator[list[int]]:
    """Counts the calls of the one function that recovers a ticket's signer (Ticket.recover)."""
    calls = [0]
    real = chrnode.ticket.recover_address

    def counted(digest: bytes, signature: bytes) -> bytes:
        calls[0] += 1
        return real(digest, signature)

    chrnode.ticket.recover_address = counted
    try:
        yield calls
    finally:
        chrnode.ticket.recover_address = real


def outcome(run: object) -> tuple[str, int | None]:
    if isinstance(run, TicketAccepted):
        return "accepted", run.added_bytes
    assert isinstance(run, TicketError)
    return run.code, None


cases = st.fixed_dictionaries(
    {
        "epoch": st.sampled_from([EPOCH - 2, EPOCH - 1, EPOCH, EPOCH + 1]),
        "signer": st.sampled_from([DEVICE, OTHER]),
        "bad_signature": st.booleans(),
        "node": st.sampled_from([NODE.address, OTHER.address]),
        "chain": st.sampled_from([CHAIN, 1]),
        "total_bytes": st.integers(0, 1 << 31),
        "connections": st.integers(0, 5),
        "stored": st.one_of(st.none(), st.tuples(st.integers(0, 1 << 31), st.integers(0, 5))),
        "node_ok": st.booleans(),
        "device_ok": st.booleans(),
        "payment": st.sampled_from([None, codes.PAYMENT_MISSING]),
    }
)


@settings(max_examples=150, deadline=None)
@given(cases)
def test_the_desk_decides_as_the_validator_recovering_once(case: dict[str, object]) -> None:
    ticket = signed_ticket(
        case["signer"],  # type: ignore[arg-type]
        case["node"],  # type: ignore[arg-type]
        epoch=case["epoch"],
        chain_id=case["chain"],
        total_bytes=case["total_bytes"],
        total_connections=case["connections"],
    )
    if case["bad_signature"]:
        ticket = dataclasses.replace(ticket, signature=ticket.signature[:64] + b"\x07")
    stored = None
    if case["stored"] is not None:
        stored_bytes, stored_connections = case["stored"]  # type: ignore[misc]
        stored = dataclasses.replace(ticket, total_bytes=stored_bytes, total_connections=stored_connections)
    hooks = Hooks(bool(case["node_ok"]), bool(case["device_ok"]), case["payment"])  # type: ignore[arg-type]
    if stored is not None:
        hooks.tickets[(DEVICE.address, stored.fleet, stored.epoch)] = stored
    desk = TicketDesk(NODE.address, CHAIN, hooks, MAX_JUMP)
    account = DeviceAccount(DEVICE.address)

    async def submit() -> object:
        try:
            return await desk.submit(account, ticket, EPOCH)
        except TicketError as exc:
            return exc

    with counting_recoveries() as recoveries:
        got = asyncio.run(submit())
    reference = TicketValidator(
        NODE.address,
        CHAIN,
        fleet_check=Fleet(bool(case["node_ok"]), bool(case["device_ok"])),
        payment_check=Payment(case["payment"]),  # type: ignore[arg-type]
        max_jump_bytes=MAX_JUMP,
    )
    try:
        expected: object = reference.validate(ticket, DEVICE.address, EPOCH, stored)
    except TicketError as exc:
        expected = exc
    assert outcome(got) == outcome(expected)
    past_step_1 = case["epoch"] in (EPOCH - 1, EPOCH)
    assert recoveries[0] == (1 if past_step_1 else 0)
    code = outcome(got)[0]
    if code in (codes.EPOCH_TOO_HIGH, codes.EPOCH_TOO_LOW, codes.BAD_SIGNATURE, codes.WRONG_DEVICE):
        assert hooks.asked == []  # steps 1-3 fail before anything is read
    if code in (codes.WRONG_NODE, codes.WRONG_CHAIN):
        assert hooks.asked == []
    if code == "accepted":
        assert hooks.asked == ["store", "fleet", "payment"]
        assert hooks.tickets[(DEVICE.address, DEFAULT_FLEET, ticket.epoch)] == ticket
        assert account.best[(ticket.fleet, ticket.epoch)] == ticket


def test_a_too_low_ticket_carries_the_stored_one_and_is_recovered_once() -> None:
    hooks = Hooks(True, True, None)
    best = signed_ticket(DEVICE, NODE.address, epoch=EPOCH, total_bytes=5000, total_connections=2)
    hooks.tickets[(DEVICE.address, best.fleet, EPOCH)] = best
    desk = TicketDesk(NODE.address, CHAIN, hooks, MAX_JUMP)
    lower = signed_ticket(DEVICE, NODE.address, epoch=EPOCH, total_bytes=4000, total_connections=2)

    async def submit() -> TicketError:
        try:
            await desk.submit(DeviceAccount(DEVICE.address), lower, EPOCH)
        except TicketError as exc:
            return exc
        raise AssertionError("a lower ticket was accepted")

    with counting_recoveries() as recoveries:
        error = asyncio.run(submit())
    assert error.code == codes.TOO_LOW and getattr(error, "latest", None) == best
    assert recoveries[0] == 1 and hooks.asked == ["store", "fleet"]
