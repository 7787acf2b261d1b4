"""Tickets on the device port (SPEC 5): validation codes, too_low, usage, grace and deadlines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chrnode.crypto import PrivateKey
from chrnode.device.client import DeviceClient
from chrnode.edge.hooks import DefaultHooks
from chrnode.errors import ChainUnavailable, ConnectionClosed, RequestRefused
from chrnode.testing.edge import TEST_EPOCH, EdgeNode, async_test, start_node, wait_for
from chrnode.ticket import Ticket

FLEET = bytes(20)


def make_ticket(
    key: PrivateKey,
    node: bytes,
    total_bytes: int,
    *,
    epoch: int = TEST_EPOCH,
    connections: int = 1,
    chain_id: int = 31337,
    fleet: bytes = FLEET,
) -> Ticket:
    return Ticket(chain_id, epoch, node, fleet, connections, total_bytes).sign(key)


async def _device(node: EdgeNode) -> tuple[DeviceClient, PrivateKey]:
    key = PrivateKey.generate()
    return await node.device(key, auto_tickets=False), key


@async_test()
async def test_valid_ticket_is_thanked_and_stored(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        client, key = await _device(node)
        reply = await client.send_ticket(make_ticket(key, node.address, 5000))
        assert (reply.status, reply.paid_bytes) == ("thanks", 5000)
        stored = node.hooks.tickets[(key.address, FLEET, TEST_EPOCH)]
        assert stored.total_bytes == 5000 and stored.recover() == key.address
        # The previous epoch is still accepted (SPEC 5 step 1).
        reply = await client.send_ticket(make_ticket(key, node.address, 10, epoch=TEST_EPOCH - 1))
        assert reply.status == "thanks"
        assert node.server.snapshot()["tickets_accepted"] == 2
        await client.close()
    finally:
        await node.stop()


@async_test()
async def test_each_failing_step_has_its_own_code(tmp_path: Path) -> None:
    hooks = DefaultHooks(epoch=TEST_EPOCH)
    node = await start_node(tmp_path, hooks, max_ticket_jump=1_000_000)
    try:
        client, key = await _device(node)
        other = PrivateKey.generate()
        cases = {
            "epoch_too_low": make_ticket(key, node.address, 1, epoch=TEST_EPOCH - 2),
            "epoch_too_high": make_ticket(key, node.address, 1, epoch=TEST_EPOCH + 1),
            "wrong_device": make_ticket(other, node.address, 1),  # forged: signed by another key
            "wrong_node": make_ticket(key, other.address, 1),
            "wrong_chain": make_ticket(key, node.address, 1, chain_id=1),
            "jump_too_large": make_ticket(key, node.address, 2_000_000),
        }
        for code, ticket in cases.items():
            with pytest.raises(RequestRefused) as refused:
                await client.send_ticket(ticket)
            assert refused.value.code == code, code
        hooks.denied_devices.add(key.address)
        with pytest.raises(RequestRefused) as refused:
            await client.send_ticket(make_ticket(key, node.address, 1))
        assert refused.value.code == "fleet_denied_device"
        assert node.hooks.tickets == {}
        assert await client.ping() > 0  # refused tickets do not end the session
        await client.close()
    finally:
        await node.stop()


@async_test()
async def test_forged_signature_bytes_are_bad_signature(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        client, key = await _device(node)
        ticket = make_ticket(key, node.address, 1)
        forged = Ticket(**{**ticket.to_wire(), "signature": bytes(32) + bytes(32) + b"\x01"})
        with pytest.raises(RequestRefused) as refused:
            await client.send_ticket(forged)
        assert refused.value.code == "bad_signature"
        await client.close()
    finally:
        await node.stop()


@async_test()
async def test_lower_than_stored_gets_too_low_with_the_stored_ticket(tmp_path: Path) -> None:
    hooks = DefaultHooks(epoch=TEST_EPOCH)
    node = await start_node(tmp_path, hooks)
    try:
        key = PrivateKey.generate()
        # A ticket from an earlier session, persisted by the TicketStore.
        earlier = make_ticket(key, node.address, 9000, connections=3)
        hooks.tickets[(key.address, FLEET, TEST_EPOCH)] = earlier
        client = await node.device(key, auto_tickets=False)
        reply = await client.send_ticket(make_ticket(key, node.address, 4000, connections=4))
        assert reply.status == "too_low" and reply.latest == earlier
        assert hooks.tickets[(key.address, FLEET, TEST_EPOCH)] == earlier
        reply = await client.send_ticket(make_ticket(key, node.address, 9500, connections=4))
        assert reply.status == "thanks"
        assert hooks.tickets[(key.address, FLEET, TEST_EPOCH)].total_bytes == 9500
        await client.close()
    finally:
        await node.stop()


@async_test()
async def test_automatic_tickets_continue_above_an_earlier_session(tmp_path: Path) -> None:
    hooks = DefaultHooks(epoch=TEST_EPOCH)
    node = await start_node(tmp_path, hooks)
    try:
        key = PrivateKey.generate()
        hooks.tickets[(key.address, FLEET, TEST_EPOCH)] = make_ticket(
            key, node.address, 50_000_000, connections=7
        )
        client = await node.device(key)  # auto tickets: too_low, then a ticket above the stored one
        stored = hooks.tickets[(key.address, FLEET, TEST_EPOCH)]
        assert stored.total_bytes > 50_000_000 and stored.total_connections == 8
        await client.close()
    finally:
        await node.stop()


async def _port_pair(node: EdgeNode, **kwargs: bool) -> tuple[DeviceClient, DeviceClient]:
    opener = await node.device(**kwargs)
    target = await node.device(auto_tickets=True)

    async def accept(_offer: object) -> bool:
        return True

    target.on_portopen = accept
    return opener, target


@async_test()
async def test_usage_past_grace_gets_ticket_request_then_close(tmp_path: Path) -> None:
    node = await start_node(tmp_path, ticket_grace_bytes=100_000, ticket_request_timeout=0.5)
    try:
        opener, target = await _port_pair(node, auto_tickets=False)
        port = await opener.open_port(target.address, 1)
        accepted = await target.accept()
        await port.write(b"x" * 300_000)
        assert len(await accepted.readexactly(300_000)) == 300_000
        await asyncio.wait_for(opener.wait_closed(), 10)
        requests = [n for n in opener.notifications if n.code == "ticket_required"]
        assert requests, opener.notifications
        usage = node.server.usage_of(opener.address)
        assert usage > 300_000
        # The paying target was asked too and answered: still connected.
        assert await target.ping() > 0
        assert node.server.usage_of(target.address) > 300_000
        await target.close()
    finally:
        await node.stop()


@async_test()
async def test_ticket_request_reaches_the_device(tmp_path: Path) -> None:
    node = await start_node(tmp_path, ticket_grace_bytes=100_000, ticket_request_timeout=5)
    try:
        opener, target = await _port_pair(node, auto_tickets=False)
        seen: list[tuple[int, int]] = []
        original = opener.request_received

        def spy(msg: object) -> None:
            from chrnode.edge.messages import TicketRequest

            if isinstance(msg, TicketRequest):
                seen.append((msg.usage, msg.epoch))
            original(msg)  # type: ignore[arg-type]

        opener.request_received = spy  # type: ignore[method-assign]
        port = await opener.open_port(target.address, 1)
        await port.write(b"y" * 200_000)
        await wait_for(lambda: bool(seen), what="ticket_request")
        usage, epoch = seen[0]
        assert usage > 100_000 and epoch == TEST_EPOCH
        reply = await opener.send_ticket(make_ticket(opener.key, node.address, usage + 10_000_000))
        assert reply.status == "thanks"
        await asyncio.sleep(0.1)
        assert opener.is_open
        await asyncio.gather(opener.close(), target.close())
    finally:
        await node.stop()


@async_test()
async def test_no_ticket_after_hello_closes_when_required(tmp_path: Path) -> None:
    node = await start_node(tmp_path, ticket_timeout=0.3)
    try:
        unpaid, _key = await _device(node)
        paying = await node.device()
        await asyncio.wait_for(unpaid.wait_closed(), 10)
        assert unpaid.closed_reason is not None and unpaid.closed_reason.code == "ticket_required"
        with pytest.raises(ConnectionClosed):
            await unpaid.ping()
        await asyncio.sleep(0.5)
        assert await paying.ping() > 0
        await paying.close()
    finally:
        await node.stop()


@async_test()
async def test_without_required_tickets_usage_counts_and_nobody_is_closed(tmp_path: Path) -> None:
    node = await start_node(tmp_path, require_tickets=False, ticket_timeout=0.2, ticket_grace_bytes=65536)
    try:
        opener, target = await _port_pair(node, auto_tickets=False)
        target.auto_tickets = False
        port = await opener.open_port(target.address, 1)
        accepted = await target.accept()
        await port.write(b"z" * 200_000)
        await accepted.readexactly(200_000)
        await asyncio.sleep(0.6)  # past ticket_timeout and the sweep
        assert opener.is_open and target.is_open
        assert await opener.ping() > 0
        assert node.server.usage_of(opener.address) > 200_000
        assert node.server.usage_of(target.address) > 200_000
        await asyncio.gather(opener.close(), target.close())
    finally:
        await node.stop()


class _ChainDown(DefaultHooks):
    async def fleet_check(self, fleet: bytes, node: bytes, device: bytes) -> tuple[bool, bool]:
        raise ChainUnavailable("every chain endpoint timed out")


@async_test()
async def test_chain_outage_answers_unavailable_and_keeps_the_session(tmp_path: Path) -> None:
    node = await start_node(tmp_path, _ChainDown(epoch=TEST_EPOCH))
    try:
        client, key = await _device(node)
        with pytest.raises(RequestRefused) as refused:
            await client.send_ticket(make_ticket(key, node.address, 1000))
        assert refused.value.code == "unavailable" and "timed out" in str(refused.value)
        # Steps 1-3 are still checked first, without the chain.
        with pytest.raises(RequestRefused) as early:
            await client.send_ticket(make_ticket(key, node.address, 1000, epoch=TEST_EPOCH + 5))
        assert early.value.code == "epoch_too_high"
        assert await client.ping() > 0
        await client.close()
    finally:
        await node.stop()
