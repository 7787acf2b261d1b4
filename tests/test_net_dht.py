"""The DHT over real peer links: several nodes in one process on loopback TLS, joined through one
seed; values published on one node are found from another, survive a killed node, and forged
objects are refused with their codes while the store stays intact."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from chrnode.crypto import PrivateKey
from chrnode.dht.node import DhtConfig
from chrnode.net.codecs import contact_of
from chrnode.objects.kinds import make_location
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm
from chrnode.peer.link_send import PeerError
from chrnode.testing.edge import async_test, wait_for
from chrnode.testing.peers import PeerNode, start_peer_nodes
from chrnode.ticket import Ticket

pytestmark = pytest.mark.slow

CFG = DhtConfig(k=4, hard_timeout=2.0, rtt_initial=0.5)
DEVICE = PrivateKey.from_bytes(b"\xd1" * 32)


async def joined(tmp_path: Path, count: int) -> list[PeerNode]:
    nodes = await start_peer_nodes(tmp_path, count, dht_config=CFG)
    seed = nodes[0].contact
    for node in nodes[1:]:
        result = await node.dht.join([seed])
        assert result.ok, "join found no node"
    return nodes


def ticket_for(node: PrivateKey, device: PrivateKey, total: int = 1000) -> Ticket:
    return Ticket(31337, 694, node.address, b"\x60" * 20, 1, total).sign(device)


def location_on(node: PeerNode) -> SignedObject:
    now = int(time.time())
    return make_location(node.key, ticket_for(node.key, DEVICE), seq=now * 1000, expires=now + 600)


async def stop_all(nodes: list[PeerNode]) -> None:
    for node in nodes:
        await node.stop()


@async_test(timeout=120)
async def test_a_published_location_is_found_from_every_node(tmp_path: Path) -> None:
    nodes = await joined(tmp_path, 10)
    try:
        assert all(len(n.dht.node.table) >= 3 for n in nodes)
        sent_to = await nodes[3].dht.publish(location_on(nodes[3]))
        assert sent_to, "the location was stored nowhere"
        for node in nodes:
            found = await node.dht.find_value(DEVICE.address)
            assert found is not None and found.signer == nodes[3].key.address
    finally:
        await stop_all(nodes)


@async_test(timeout=120)
async def test_lookups_succeed_after_a_node_is_killed(tmp_path: Path) -> None:
    nodes = await joined(tmp_path, 10)
    victim = nodes[0]
    try:
        await nodes[2].dht.publish(location_on(nodes[2]))

        def holders() -> list[PeerNode]:
            return [n for n in nodes[3:] if n.dht.node.store.get(DEVICE.address, time.time()) is not None]

        await wait_for(lambda: bool(holders()), what="a STORE landed")
        victim = holders()[0]
        await victim.stop()
        alive = [n for n in nodes if n is not victim]
        for node in alive:
            found = await node.dht.find_value(DEVICE.address)
            assert found is not None
        result = await alive[-1].dht.lookup(victim.key.address)
        assert result.ok
    finally:
        await stop_all([n for n in nodes if n is not victim])


@async_test(timeout=120)
async def test_forged_and_mis_keyed_objects_are_refused_and_the_store_stays_intact(tmp_path: Path) -> None:
    nodes = await joined(tmp_path, 3)
    try:
        good = location_on(nodes[1])
        await nodes[1].dht.publish(good)
        target = nodes[2]
        link = await nodes[0].network.connect(target.key.address, "127.0.0.1", target.contact.peer_port)
        # Signed by node 0 but carrying node 1's signature bytes: it does not recover to node 0.
        forged = SignedObject(
            "location",
            DEVICE.address,
            nodes[0].key.address,
            good.seq + 20,
            good.expires,
            good.data,
            good.signature,
        )
        with pytest.raises(PeerError) as info:
            await link.ask(pm.Store(forged))
        assert info.value.code == "bad_signature"
        # Properly signed by node 0, but the ticket inside is another device's: mis_keyed.
        other_device = ticket_for(nodes[0].key, PrivateKey.from_bytes(b"\xd2" * 32))
        mis_keyed = SignedObject.sign(
            nodes[0].key, kind="location", key=DEVICE.address, seq=good.seq + 40, expires=good.expires,
            data={"ticket": other_device.to_wire()},
        )  # fmt: skip
        with pytest.raises(PeerError) as info:
            await link.ask(pm.Store(mis_keyed))
        assert info.value.code == "mis_keyed"
        # Node 1's own older location: stale where the newer one is held.
        stale = make_location(
            nodes[1].key, ticket_for(nodes[1].key, DEVICE), seq=good.seq - 1, expires=good.expires
        )
        if target.dht.node.store.get(DEVICE.address, time.time()) is not None:
            with pytest.raises(PeerError) as info:
                await link.ask(pm.Store(stale))
            assert info.value.code == "stale"
        for node in nodes:
            found = await node.dht.find_value(DEVICE.address)
            assert found is not None and found.seq == good.seq and found.signer == nodes[1].key.address
        assert link.node == target.key.address and not link.closed  # refusals do not cost the link
        assert await link.ask(pm.PeerPing())
    finally:
        await stop_all(nodes)


@async_test(timeout=60)
async def test_find_node_answers_carry_signed_records_only(tmp_path: Path) -> None:
    nodes = await joined(tmp_path, 5)
    try:
        link = await nodes[1].network.connect(nodes[0].key.address, "127.0.0.1", nodes[0].contact.peer_port)
        answer = await link.ask(pm.FindNode(b"\x00" * 20))
        assert isinstance(answer, pm.Nodes) and answer.nodes
        for obj in answer.nodes:
            assert contact_of(obj).address == obj.signer
        await asyncio.sleep(0)
    finally:
        await stop_all(nodes)
