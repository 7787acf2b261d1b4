"""TicketSubmitter (SPEC 5: the best tickets go to the chain in batches) on a real anvil: verdicts per
ticket, records in the registry, storage ops, retries with backoff when the chain is away."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import msgpack
import pytest

from chrnode.chain.contracts import TicketRegistry
from chrnode.chain.rpc import RemoteRpc
from chrnode.chain.submitter import SubmitOutcome, TicketSubmitter, mark_ops, ticket_of_row
from chrnode.crypto import PrivateKey
from chrnode.storage.rows import TicketRow
from chrnode.testing.anvil import DEV_CHAIN_ID, DevChain
from chrnode.testing.chain import ChainWorld

pytestmark = pytest.mark.chain


@pytest.fixture
def world(devchain: DevChain) -> Iterator[ChainWorld]:
    snap = devchain.snapshot()
    yield ChainWorld.build(devchain)
    devchain.revert(snap)


def test_submitted_tickets_appear_in_the_registry(world: ChainWorld) -> None:
    second = PrivateKey.generate()
    world.allow_device(second.address)
    outsider = PrivateKey.generate()  # not in the fleet's device allowlist
    tickets = [
        world.ticket(total_bytes=1000, total_connections=2),
        world.ticket(second, total_bytes=500),
        world.ticket(outsider, total_bytes=700),
    ]
    registry = TicketRegistry(world.chain.rpc, world.chain.address("ticket_registry"))
    outcomes = TicketSubmitter(registry, world.node, batch_size=2).submit(tickets)
    assert [o.accepted for o in outcomes] == [True, True, False]
    assert outcomes[2].reason == "fleet_refused"
    assert outcomes[0].tx_hash != outcomes[2].tx_hash  # two batches, two transactions
    assert sum(o.added_bytes for o in outcomes) == 1500
    epoch, node, fleet = world.epoch, world.node.address, world.fleet_address
    assert registry.best_totals(node, world.device.address, fleet, epoch) == (2, 1000)
    assert registry.best_totals(node, second.address, fleet, epoch) == (1, 500)
    assert registry.best_totals(node, outsider.address, fleet, epoch) == (0, 0)
    assert registry.bytes_served(node, epoch) == 1500
    again = TicketSubmitter(registry, world.node).submit(tickets[:1])
    assert again[0].accepted is False and again[0].reason == "not_higher"


def test_storage_rows_round_trip_into_mark_ops(world: ChainWorld) -> None:
    ticket = world.ticket(total_bytes=42)
    row = TicketRow(
        device=world.device.address,
        fleet=ticket.fleet,
        epoch=ticket.epoch,
        total_bytes=42,
        total_connections=1,
        ticket=msgpack.packb(ticket.to_wire(), use_bin_type=True),
        received_at=1.0,
        submitted_at=None,
        submit_tx=None,
        accepted=None,
    )
    assert ticket_of_row(row) == ticket
    outcomes = [SubmitOutcome(True, "", b"\x01" * 32, 42)]
    (op,) = mark_ops([row], outcomes, 5.0)
    assert (op.device, op.total_bytes, op.submit_tx, op.accepted, op.submitted_at) == (
        world.device.address,
        42,
        b"\x01" * 32,
        True,
        5.0,
    )
    assert mark_ops([row], [SubmitOutcome(None, "chain unavailable")], 5.0) == []  # not sent: stays pending
    with pytest.raises(ValueError, match="1 rows but 2 outcomes"):
        mark_ops([row], outcomes * 2, 5.0)


def test_an_unreachable_chain_is_retried_with_backoff_then_left_for_later(world: ChainWorld) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    slept: list[float] = []
    with RemoteRpc([dead], DEV_CHAIN_ID, timeout=1.0) as rpc:
        registry = TicketRegistry(rpc, world.chain.address("ticket_registry"))
        submitter = TicketSubmitter(
            registry, world.node, batch_size=1, retries=3, backoff=0.5, sleep=slept.append
        )
        outcomes = submitter.submit([world.ticket(total_bytes=1), world.ticket(total_bytes=2)])
    assert slept == [0.5, 1.0, 2.0]  # one batch retried, then the run stops
    assert [o.accepted for o in outcomes] == [None, None]
    assert all("chain unavailable" in o.reason for o in outcomes)


def test_bad_settings_are_refused(world: ChainWorld) -> None:
    registry = TicketRegistry(world.chain.rpc, world.chain.address("ticket_registry"))
    with pytest.raises(ValueError, match="batch_size"):
        TicketSubmitter(registry, world.node, batch_size=257)
    with pytest.raises(ValueError, match="not be negative"):
        TicketSubmitter(registry, world.node, retries=-1)
