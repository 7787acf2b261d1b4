"""The peer port under the edge's admission control (issue 10, chrnode.edge.admission): idle
pre-TLS sockets are shed and cut at the hello deadline while real peers keep linking and working;
a group full of proven links refuses the newcomer before any TLS work. Real TLS nodes on loopback
in one process (chrnode.testing.peers), a raw attacker thread with plain sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from chrnode.crypto import PrivateKey
from chrnode.dht.node import DhtConfig
from chrnode.net.peers import PeerNetworkConfig
from chrnode.peer import messages as pm
from chrnode.peer.link import PeerLink
from chrnode.peer.link_send import PeerError
from chrnode.testing.abuse import Slowloris
from chrnode.testing.edge import async_test, wait_for
from chrnode.testing.peers import PeerNode, start_peer_node

pytestmark = pytest.mark.slow

DHT = DhtConfig(k=4, hard_timeout=2.0, rtt_initial=0.5)
# Plenty of new connections per second per address: the test is about admission, not the bucket.
CAPPED = PeerNetworkConfig(
    accepts_per_second_per_ip=1000.0,
    max_connections=40,
    conns_per_ip=4,
    conns_per_subnet=16,
    admission_deadline=1.0,
)
# The flood comes from two /24s other than the real peers' 127.0.0.0/24.
FLOOD_SOURCES = [f"127.0.{1 + i % 2}.{2 + i}" for i in range(20)]


async def node(tmp_path: Path, index: int, config: PeerNetworkConfig | None = None) -> PeerNode:
    key = PrivateKey.from_bytes((0x500 + index).to_bytes(32, "big"))
    return await start_peer_node(tmp_path / f"n{index}", key, dht_config=DHT, net_config=config, seed=index)


async def link_to(peer: PeerNode, target: PeerNode) -> PeerLink:
    return await peer.network.connect(target.key.address, "127.0.0.1", target.contact.peer_port)


@async_test(timeout=90)
async def test_idle_pre_tls_flood_is_shed_while_real_peers_link_and_work(tmp_path: Path) -> None:
    target = await node(tmp_path, 0, CAPPED)
    old, new = await node(tmp_path, 1), await node(tmp_path, 2)
    admission = target.network.admission
    try:
        old_link = await link_to(old, target)
        loop = asyncio.get_running_loop()
        flood = Slowloris("127.0.0.1", target.contact.peer_port, sources=FLOOD_SOURCES, count=200)
        await loop.run_in_executor(None, flood.start)
        try:
            worst = (0, 0, 0)
            for _ in range(20):  # the proven link keeps answering through the flood
                assert await old_link.ask(pm.PeerPing()) is not None
                per_ip = max(admission.count_of(ip)[0] for ip in FLOOD_SOURCES)
                per_subnet = max(admission.count_of(ip)[1] for ip in FLOOD_SOURCES)
                worst = (max(worst[0], len(admission)), max(worst[1], per_ip), max(worst[2], per_subnet))
                await asyncio.sleep(0.05)
            # A peer that dials during the flood gets its link and its answers.
            new_link = await link_to(new, target)
            assert new_link.node == target.key.address
            assert isinstance(await new_link.ask(pm.FindNode(b"\x00" * 20)), pm.Nodes)
            joined = await new.dht.join([target.contact])
            assert joined.ok
            await wait_for(lambda: flood.closed_by_node > 50, 15, "the node to shed and cut the flood")
        finally:
            await loop.run_in_executor(None, flood.stop)
        assert worst[0] <= CAPPED.max_connections and worst[1] <= 4 and worst[2] <= 16, worst
        counters = admission.counters()
        assert counters["shed_total"] > 0, counters
        assert old_link is old.network.links[target.key.address] and not old_link.closed
        assert await old_link.ask(pm.PeerPing()) is not None
        # Once the flood is gone only the two proven links are left in the accounting.
        await wait_for(lambda: len(admission) == 2 and admission.pending_count == 0, 10, "the flood to leave")
    finally:
        for n in (old, new, target):
            await n.stop()


@async_test(timeout=60)
async def test_a_silent_socket_is_cut_at_the_admission_deadline(tmp_path: Path) -> None:
    target = await node(tmp_path, 0, CAPPED)
    loop = asyncio.get_running_loop()
    try:
        sock = socket.create_connection(("127.0.0.1", target.contact.peer_port), timeout=5)
        started = time.monotonic()
        sock.settimeout(8)
        try:
            data = await loop.run_in_executor(None, sock.recv, 100)
        finally:
            sock.close()
        waited = time.monotonic() - started
        assert data == b""
        # The deadline (1 s, checked once a second), well before the 5 s TLS handshake timeout.
        assert waited < 4.0, waited
        await wait_for(lambda: target.network.admission.expired_total == 1, 5, "the expiry to be counted")
        assert len(target.network.admission) == 0
    finally:
        await target.stop()


@async_test(timeout=60)
async def test_an_address_full_of_proven_links_refuses_the_next_before_tls(tmp_path: Path) -> None:
    target = await node(tmp_path, 0, PeerNetworkConfig(conns_per_ip=2, admission_deadline=5.0))
    peers = [await node(tmp_path, i) for i in (1, 2, 3, 4)]
    try:
        links = [await link_to(p, target) for p in peers[:2]]
        with pytest.raises(PeerError) as refused:
            await link_to(peers[2], target)
        assert refused.value.code == "unavailable"
        assert target.network.admission.refused_total == 1 and target.network.refused == 1
        for link in links:  # the two proven links are untouched
            assert await link.ask(pm.PeerPing()) is not None
        assert set(target.network.links) == {p.key.address for p in peers[:2]}
        # One closes: its slot is free again, and another peer gets in.
        links[0].close()
        await wait_for(lambda: len(target.network.admission) == 1, 5, "the closed link to leave")
        third = await link_to(peers[3], target)
        assert await third.ask(pm.PeerPing()) is not None
    finally:
        for n in (*peers, target):
            await n.stop()
