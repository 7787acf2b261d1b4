"""NodeNetwork (the peer side of a node) in one process over real TLS on loopback: joining through
the fleet, what it persists, MERKLE reconciliation moving only what differs, bad MERKLE ranges,
and the write batching of OpsPersistence."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from pathlib import Path
from typing import Any

import pytest

from chrnode.config_fields import FleetNode
from chrnode.crypto import PrivateKey
from chrnode.dht.node import DhtConfig
from chrnode.identity import edge_client_context, edge_server_context, ensure_node_certificate
from chrnode.net.node_network import NetworkSettings, NodeNetwork
from chrnode.net.persist import OpsPersistence
from chrnode.objects.kinds import make_location
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm
from chrnode.peer.link_send import PeerError
from chrnode.storage.ops import DhtPut, PeerSeen
from chrnode.testing.edge import async_test, wait_for
from chrnode.testing.peers import start_peer_node
from chrnode.ticket import Ticket

pytestmark = pytest.mark.slow


class Recorded:
    """A Persistence that keeps what it is given (what the listener writes to Model.Sql)."""

    def __init__(self) -> None:
        self.objects: list[SignedObject] = []
        self.peers: list[tuple[bytes, bool, bool | None]] = []

    def object_held(self, obj: SignedObject) -> None:
        self.objects.append(obj)

    def peer_seen(self, address: bytes, connected: bool, ok: bool | None) -> None:
        self.peers.append((address, connected, ok))


def key(i: int) -> PrivateKey:
    return PrivateKey.from_bytes(i.to_bytes(32, "big"))


def start(tmp_path: Path, i: int, fleet: tuple[FleetNode, ...] = ()) -> tuple[NodeNetwork, Recorded]:
    node_key = key(i)
    cert, pem = ensure_node_certificate(node_key, tmp_path / f"n{i}")
    loop = asyncio.get_running_loop()
    settings = NetworkSettings(
        host="127.0.0.1", peer_port=0, chain_id=31337, fleet=fleet, dht=DhtConfig(hard_timeout=2.0)
    )
    recorded = Recorded()
    net = NodeNetwork(
        loop, node_key, edge_server_context(pem, cert), edge_client_context(), settings, recorded
    )
    net.start("127.0.0.1", [41046])
    return net, recorded


def seed_of(net: NodeNetwork) -> FleetNode:
    return FleetNode("0x" + net.key.address.hex(), "127.0.0.1", net.port)


def locations(node: PrivateKey, count: int) -> list[SignedObject]:
    now = int(time.time())
    out = []
    for i in range(count):
        ticket = Ticket(31337, 694, node.address, b"\x60" * 20, 1, 1000 + i).sign(key(5000 + i))
        out.append(make_location(node, ticket, seq=now * 1000 + i, expires=now + 600))
    return out


@async_test(timeout=90)
async def test_nodes_join_through_the_fleet_and_persist_what_they_learn(tmp_path: Path) -> None:
    first, rec0 = start(tmp_path, 1)
    first.restore([])
    others = []
    for i in (2, 3):
        net, rec = start(tmp_path, i, (seed_of(first),))
        net.restore([])
        others.append((net, rec))
    try:
        for net, _ in [(first, rec0), *others]:
            await wait_for(lambda n=net: len(n.dht.node.table) == 2, 20, "a routing table of the two others")
            await wait_for(lambda n=net: n.p2p_status()["links"] == 2, 20, "links to the two others")
        for net, rec in others:
            fleet = net.fleet_status()
            assert fleet["configured"] and fleet["connected"] and fleet["connected_nodes"] == 1
            assert {row["state"] for row in net.peer_rows()} == {"connected"}
            # peer_history: the link to the seed came up, and its own node object is held.
            assert (first.key.address, True, None) in rec.peers
            assert any(o.kind == "node" and o.key == net.key.address for o in rec.objects)
        # Every node ends up holding every node object (published after the join).
        for net, _ in [(first, rec0), *others]:
            await wait_for(lambda n=net: len(n.objects) == 3, 20, "the three node objects")
    finally:
        for net, _ in [(first, rec0), *others]:
            await net.close()


@async_test(timeout=90)
async def test_merkle_moves_only_the_objects_that_differ(tmp_path: Path) -> None:
    a, _ = start(tmp_path, 11)
    b, rec_b = start(tmp_path, 12)
    held = locations(a.key, 60)
    missing = {obj.key for obj in held[-5:]}
    a.restore(held)
    b.restore(held[:-5])  # b was away while a's last five devices came
    try:
        assert len(b.objects) == 56  # its own node object and 55 of a's locations
        await b.network.connect(a.key.address, "127.0.0.1", a.port)
        await wait_for(
            lambda: missing <= {o.key for o in b.objects.values()}, 20, "b holding a's five new objects"
        )
        await wait_for(
            lambda: b.sync.totals["runs"] >= 1 and a.sync.totals["runs"] >= 1, 20, "both reconciled"
        )
        into_b = {k for r in b.sync.recent for k in r.fetched_keys} | {
            k for r in a.sync.recent for k in r.pushed_keys
        }
        out_of_b = {k for r in b.sync.recent for k in r.pushed_keys} | {
            k for r in a.sync.recent for k in r.fetched_keys
        }
        node_objects = {a.key.address, b.key.address}
        assert missing <= into_b <= missing | node_objects
        assert out_of_b <= node_objects
        # The descent stopped at equal ranges: far fewer queries than objects held.
        assert b.sync.totals["queries"] < 40, b.sync.totals
        assert {o.key for o in rec_b.objects} >= missing  # persisted as they came
    finally:
        await a.close()
        await b.close()


@async_test(timeout=90)
async def test_bad_merkle_ranges_are_refused_and_the_link_stays_up(tmp_path: Path) -> None:
    net, _ = start(tmp_path, 21)
    net.restore(locations(net.key, 20))
    raw = await start_peer_node(tmp_path / "raw", key(22))
    raws = [raw]
    rng = random.Random(7)
    dropped = 0
    try:
        link = await raw.network.connect(net.key.address, "127.0.0.1", net.port)
        for _ in range(150):
            if link.closed:  # a peer that persists in bad requests is dropped; another comes
                dropped += 1
                raws.append(await start_peer_node(tmp_path / f"raw{dropped}", key(100 + dropped)))
                link = await raws[-1].network.connect(net.key.address, "127.0.0.1", net.port)
            bits = rng.choice([rng.randint(-5, 170), rng.randint(0, 160), 2**40])
            prefix = rng.randbytes(rng.choice([0, 1, 5, 20, 21, 64]))
            valid = 0 <= bits <= 160 and len(prefix) * 8 >= bits and len(prefix) <= 20  # SPEC 6 keys
            try:
                answer = await link.ask(pm.Merkle(prefix, bits), 5.0)
            except PeerError as exc:
                assert not valid or link.closed, (prefix, bits, exc)
                assert exc.code in ("bad_payload", "bad_frame", "timeout"), exc
                continue
            assert valid, (prefix, bits, answer)
            assert set(answer) <= {"hash", "items"}
        # Still serving: a well-formed request on a live link is answered from the intact store.
        if link.closed:
            raws.append(await start_peer_node(tmp_path / "raw-last", key(99)))
            link = await raws[-1].network.connect(net.key.address, "127.0.0.1", net.port)
        answer = await link.ask(pm.Merkle(b"", 0), 5.0)
        assert "hash" in answer  # 21 objects: more than a few
        assert len(net.objects) == 21  # its own node object and the twenty locations
    finally:
        for peer in raws:
            await peer.stop()
        await net.close()


@async_test(timeout=90)
async def test_a_fleet_node_that_comes_back_is_redialled_and_joined(tmp_path: Path) -> None:
    seed, _ = start(tmp_path, 41)
    seed.restore([])
    port = seed.port
    await seed.close()  # the fleet node is down when the other starts
    node, _ = start(tmp_path, 42, (FleetNode("0x" + key(41).address.hex(), "127.0.0.1", port),))
    node.restore([])
    back: NodeNetwork | None = None
    try:
        await wait_for(lambda: node.joins >= 1, 10, "a first join attempt")
        assert len(node.dht.node.table) == 0 and not node.fleet_status()["connected"]
        cert, pem = ensure_node_certificate(key(41), tmp_path / "n41")
        settings = dataclasses.replace(seed.settings, peer_port=port)
        back = NodeNetwork(
            asyncio.get_running_loop(), key(41), edge_server_context(pem, cert), edge_client_context(),
            settings, Recorded(),
        )  # fmt: skip
        back.start("127.0.0.1", [41046])
        back.restore([])
        # Pinned: redialled with backoff until it answers; then both tables hold each other.
        await wait_for(lambda: node.fleet_status()["connected"], 30, "the fleet node linked again")
        await wait_for(lambda: len(node.dht.node.table) == 1 and len(back.dht.node.table) == 1, 30, "tables")
    finally:
        await node.close()
        if back is not None:
            await back.close()


@async_test(timeout=30)
async def test_ops_persistence_batches_writes_one_at_a_time(tmp_path: Path) -> None:
    writes: list[list[Any]] = []
    gate = asyncio.Event()

    async def write(ops: list[Any]) -> None:
        writes.append(ops)
        await gate.wait()

    persistence = OpsPersistence(asyncio.get_running_loop(), write)
    objects = locations(key(31), 3)
    for obj in objects:
        persistence.object_held(obj)
    await asyncio.sleep(0)
    persistence.peer_seen(key(32).address, True, None)  # queued while the first write is open
    assert len(writes) == 1 and [op.key for op in writes[0]] == [o.key for o in objects]
    assert all(isinstance(op, DhtPut) for op in writes[0])
    gate.set()
    await persistence.drain()
    assert len(writes) == 2 and isinstance(writes[1][0], PeerSeen) and writes[1][0].connected
    assert persistence.status()["written"] == 4
