"""Three full nodes from the localnet helper (real daemons, real TLS peer ports on loopback).

The tests share one localnet and run in order: peers, a location found across nodes and forged
objects refused, a killed node noticed and its device's location lapsing, then the node restarted
and converging through MERKLE, exchanging only what differs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chrnode.crypto import PrivateKey
from chrnode.device.client import DeviceClient, connect
from chrnode.edge.messages import ErrorReply, GetNode, GetNodeReply, GetObject, GetObjectReply
from chrnode.errors import RequestRefused
from chrnode.objects.kinds import make_hello_location
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm
from chrnode.peer.link import PeerError
from chrnode.testing.localnet import Localnet
from chrnode.testing.node import NodeProcess
from chrnode.testing.peers import start_peer_node

pytestmark = pytest.mark.slow

LOCATION_TTL = 30


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Localnet]:
    localnet = Localnet(tmp_path_factory.mktemp("localnet"), 3, env={"CHR_LOCATION_TTL": str(LOCATION_TTL)})
    localnet.start()
    try:
        yield localnet
    finally:
        assert localnet.stop() == [], "a process of the localnet outlived stop"


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.3)


def address(node: NodeProcess) -> bytes:
    return bytes.fromhex(node.rpc("chr_node_info")["address"][2:])


def connected_peers(node: NodeProcess) -> set[str]:
    return {p["node_id"] for p in node.rpc("peer_list")["peers"] if p["state"] == "connected"}


async def device_on(node: NodeProcess, seed: int) -> DeviceClient:
    return await connect("127.0.0.1", node.edge_ports[0], device_key(seed), auto_tickets=False)


async def get_object(client: DeviceClient, key: bytes) -> Any:
    try:
        return await client.request(GetObject(key=key))
    except Exception as exc:  # the client raises the node's error answer
        return exc


def test_every_node_links_the_others(net: Localnet) -> None:
    addresses = {"0x" + address(n).hex() for n in net.nodes}
    for node in net.nodes:
        others = addresses - {"0x" + address(node).hex()}
        wait_until(f"{node.data_dir.name} links the others", lambda n=node, o=others: connected_peers(n) == o)
    stats = net.nodes[1].rpc("network_stats")["p2p"]
    assert stats["links"] == 2 and stats["dht"]["routing_table"] == 2
    fleet = net.nodes[1].rpc("fleet_status")
    assert fleet["seeds_configured"] and fleet["connected_nodes"] == 1
    assert net.nodes[0].rpc("health")["layers"]["network"]["status"] == "ok"
    assert "chr_p2p_links 2.0" in metrics(net.nodes[0])
    # peer_history, persisted through Model.Sql: one row per peer, first and last seen, links.
    rows = wait_until("peer_history rows of both peers", lambda: peer_history(net.nodes[0]), 10)
    assert {row[0] for row in rows} == addresses - {"0x" + address(net.nodes[0]).hex()}
    assert all(row[1] <= row[2] and row[3] >= 1 and 0 <= row[4] <= 1 for row in rows)


def test_devices_on_different_nodes_open_a_port_and_move_data_intact(net: Localnet) -> None:
    first, last = net.nodes[0], net.nodes[-1]

    async def run() -> None:
        opener = await device_on(first, 301)
        target = await device_on(last, 302)

        async def accept(_offer: Any) -> bool:
            return True

        target.on_portopen = accept
        try:
            deadline = time.monotonic() + 30
            while not isinstance(await get_object(opener, target.address), GetObjectReply):
                assert time.monotonic() < deadline, "the target's location never reached the network"
                await asyncio.sleep(0.3)
            port = await opener.open_port(target.address, "data")
            remote = await target.accept()
            up, down = os.urandom(2 * 1024 * 1024 + 3), os.urandom(512 * 1024 + 1)

            async def send(p: Any, data: bytes) -> None:
                for i in range(0, len(data), 50_000):
                    await p.write(data[i : i + 50_000])

            got_up, got_down, _, _ = await asyncio.gather(
                remote.readexactly(len(up)), port.readexactly(len(down)), send(port, up), send(remote, down)
            )
            assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
            assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
            await port.close()
            assert await remote.read() == b""
        finally:
            await asyncio.gather(opener.close(), target.close(), return_exceptions=True)

    asyncio.run(run())

    def relayed() -> bool:  # the network process reports once a second
        relay = first.rpc("network_stats")["p2p"].get("relay") or {}
        return relay.get("relayed_out", 0) >= 2 * 1024 * 1024 and relay.get("locations_found", 0) >= 1

    wait_until("the relay's figures in network_stats", relayed, timeout=10)


def peer_history(node: NodeProcess) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{node.data_dir / 'chr-node.sqlite'}?mode=ro", uri=True)
    try:
        query = "SELECT peer_id, first_seen, last_seen, connection_count, reliability_score FROM peer_history"
        rows = db.execute(query).fetchall()
    finally:
        db.close()
    return rows if len(rows) == 2 else []


def metrics(node: NodeProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.rpc_port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_a_location_is_found_from_another_node_and_forgeries_are_refused(
    net: Localnet, tmp_path: Path
) -> None:
    async def run() -> None:
        device = await device_on(net.nodes[1], 101)
        asker = await device_on(net.nodes[2], 102)
        raw = await start_peer_node(tmp_path / "raw", PrivateKey.from_bytes((777).to_bytes(32, "big")))
        try:
            node0 = net.nodes[0]
            link = await raw.network.connect(address(node0), "127.0.0.1", int(node0.ports["peer2"]))
            found: pm.ValueFound | None = None
            for _ in range(100):  # its STORE lands within a moment of the hello
                answer = await link.ask(pm.FindValue(device.key.address))
                if isinstance(answer, pm.ValueFound):
                    found = answer
                    break
                await asyncio.sleep(0.2)
            assert found is not None, "node 0 never held the location published by node 1"
            assert found.object.kind == "location" and found.object.signer == address(net.nodes[1])
            # From a device on node 2 too (getobject: held there, or found through the DHT).
            reply = await get_object(asker, device.key.address)
            assert isinstance(reply, GetObjectReply)
            assert SignedObject.from_wire(reply.object) == found.object
            # getnode for another node: its signed node object, with its real ports.
            record = await asker.request(GetNode(node=address(net.nodes[0])))
            assert isinstance(record, GetNodeReply)
            node_object = SignedObject.from_wire(record.record)
            assert node_object.kind == "node" and node_object.signer == address(net.nodes[0])
            assert node_object.data["peer_port"] == int(net.nodes[0].ports["peer2"])
            assert node_object.data["edge_ports"] == net.nodes[0].edge_ports

            # A raw peer claims the device with a forged hello proof, and forges a node object.
            forged = make_hello_location(
                raw.key, device.key.address, b"\1" * 32, b"\2" * 65, seq=2**62, expires=int(time.time()) + 60
            )
            with pytest.raises(PeerError) as refused:
                await link.ask(pm.Store(forged))
            assert refused.value.code in ("bad_signature", "mis_keyed")
            fake_node = SignedObject.sign(
                raw.key, kind="node", key=address(net.nodes[1]), seq=2**62, expires=int(time.time()) + 60,
                data=dict(raw.record.data),
            )  # fmt: skip
            with pytest.raises(PeerError) as refused:
                await link.ask(pm.Store(fake_node))
            assert refused.value.code == "mis_keyed"
            again = await link.ask(pm.FindValue(device.key.address))
            assert isinstance(again, pm.ValueFound) and again.object == found.object
        finally:
            await raw.stop()
            await device.close()
            await asker.close()

    asyncio.run(run())
    # The refusals are counted (the snapshot is republished once a second).
    wait_until(
        "node 0 counts the refused STOREs", lambda: net.nodes[0].rpc("network_stats")["p2p"]["dht"]["refused"]
    )


def test_a_killed_node_is_noticed_and_its_location_lapses(net: Localnet) -> None:
    async def run() -> None:
        device = await device_on(net.nodes[2], 201)
        watcher = await device_on(net.nodes[0], 202)
        try:
            key = device.key.address
            await wait_for_object(watcher, key, present=True)
            killed = "0x" + address(net.nodes[2]).hex()
            net.kill_node(2)
            for node in net.nodes[:2]:
                wait_until(
                    "the killed node's link is down", lambda n=node: killed not in connected_peers(n), 15
                )
            await wait_for_object(watcher, key, present=False, timeout=LOCATION_TTL + 10)
        finally:
            await watcher.close()

    asyncio.run(run())


async def wait_for_object(client: DeviceClient, key: bytes, *, present: bool, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        reply = await get_object(client, key)
        if present and isinstance(reply, GetObjectReply):
            return
        if not present and isinstance(reply, RequestRefused) and reply.code == "not_found":
            return  # lapsed everywhere: neither held here nor found in the DHT
        if time.monotonic() > deadline:
            raise AssertionError(f"object {'never appeared' if present else 'did not lapse'}: {reply!r}")
        await asyncio.sleep(0.5)


def test_a_restarted_node_converges_through_merkle_fetching_only_what_differs(net: Localnet) -> None:
    async def publish_while_down() -> list[bytes]:
        # Two devices come and go while node 2 is down: their locations stay live for
        # LOCATION_TTL but are no longer republished, so only MERKLE can bring them to node 2.
        device = await device_on(net.nodes[1], 301)
        watcher = await device_on(net.nodes[0], 302)
        await wait_for_object(watcher, device.key.address, present=True)
        await wait_for_object(watcher, watcher.key.address, present=True)
        await device.close()
        await watcher.close()
        return [device.key.address, watcher.key.address]

    async def check(node: NodeProcess, keys: list[bytes]) -> None:  # getobject on node 2 finds them
        asker = await device_on(node, 303)
        try:
            for key in keys:
                reply = await get_object(asker, key)
                assert isinstance(reply, GetObjectReply) and not isinstance(reply, ErrorReply)
        finally:
            await asker.close()

    keys = {"0x" + k.hex() for k in asyncio.run(publish_while_down())}
    before = [merkle_runs(n) for n in net.nodes[:2]]
    node = net.restart(2)
    me = "0x" + address(node).hex()

    def moved() -> tuple[set[str], set[str]] | None:
        """(keys that came into node 2, keys that went out of it), once both peers reconciled."""
        mine = node.rpc("network_stats")["p2p"].get("merkle")
        if mine is None or mine["runs"] < 2:
            return None
        into = {k for run in mine["recent"] for k in run["fetched"]}
        out = {k for run in mine["recent"] for k in run["pushed"]}
        for peer, old in zip(net.nodes[:2], before, strict=True):
            for run in merkle_runs(peer):
                if run not in old and run["peer"] == me:
                    into |= set(run["pushed"])
                    out |= set(run["fetched"])
        return (into, out) if into >= keys else None

    into, out = wait_until("the two locations came to the restarted node through MERKLE", moved)
    # Only what differs moved: the locations it missed while down in (those two, and the
    # previous test's watcher's if its STORE had not reached node 2 before the kill), at most
    # its own new node object out; the node objects it restored from its database stayed put.
    assert keys <= into <= keys | {"0x" + device_key(202).address.hex()}
    assert out <= {me}
    merkle = node.rpc("network_stats")["p2p"]["merkle"]
    assert merkle["refused"] == 0 and merkle["queries"] == merkle["runs"], merkle
    asyncio.run(check(node, [bytes.fromhex(k[2:]) for k in keys]))


def merkle_runs(node: NodeProcess) -> list[dict[str, Any]]:
    return list(node.rpc("network_stats")["p2p"].get("merkle", {}).get("recent", []))


def device_key(seed: int) -> PrivateKey:
    return PrivateKey.from_bytes(seed.to_bytes(32, "big"))
