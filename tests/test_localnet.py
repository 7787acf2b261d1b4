"""Five full nodes from the localnet helper (issue 10): real daemons, real TLS peer ports on
loopback, one shared anvil (names resolve through BNS on it).

ORDER-DEPENDENT: the tests share one module-scoped localnet and run in file order. The first
four leave every node up: links, ports across nodes by address and by BNS name, a location
found from another node and forged objects refused, an idle flood on a peer port shed. Then
`test_kill_*` SIGKILLs node 2 (its devices' locations lapse, one reconnects elsewhere and is
found there), and `test_restart_*` starts node 2 again and checks it converges through MERKLE,
fetching only what differs. Each of those two depends on the one before it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chrnode.chain.bns import parse_name
from chrnode.chain.contracts import Bns
from chrnode.chain.rpc import RemoteRpc
from chrnode.crypto import PrivateKey
from chrnode.device.client import DeviceClient, connect
from chrnode.dht.ids import Contact
from chrnode.edge.messages import ErrorReply, GetNode, GetNodeReply, GetObject, GetObjectReply
from chrnode.errors import ProtocolError, RequestRefused
from chrnode.objects.kinds import make_hello_location
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm
from chrnode.peer.link_send import PeerError
from chrnode.testing.abuse import Slowloris
from chrnode.testing.anvil import DEPLOYER
from chrnode.testing.localnet import Localnet
from chrnode.testing.node import NodeProcess
from chrnode.testing.peers import start_peer_node

pytestmark = pytest.mark.slow

NODES = 5
LOCATION_TTL = 20  # seconds (location_ttl's floor is 10): what the lapse test waits for
KILLED = 2  # the node the kill and restart tests take down


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Localnet]:
    env = {"CHR_LOCATION_TTL": str(LOCATION_TTL)}
    localnet = Localnet(tmp_path_factory.mktemp("localnet"), NODES, chain=True, env=env)
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


def device_key(seed: int) -> PrivateKey:
    return PrivateKey.from_bytes(seed.to_bytes(32, "big"))


async def device_on(node: NodeProcess, seed: int) -> DeviceClient:
    return await connect("127.0.0.1", node.edge_ports[0], device_key(seed), auto_tickets=False)


async def accepting_device_on(node: NodeProcess, seed: int) -> DeviceClient:
    device = await device_on(node, seed)

    async def accept(_offer: Any) -> bool:
        return True

    device.on_portopen = accept
    return device


async def get_object(client: DeviceClient, key: bytes) -> Any:
    try:
        return await client.request(GetObject(key=key))
    except Exception as exc:  # the client raises the node's error answer
        return exc


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


async def lapsed_everywhere(nodes: list[NodeProcess], key: bytes, timeout: float) -> None:
    """Poll until a getobject for ``key`` answers not_found on every one of ``nodes`` (neither held
    there nor found in the DHT). Each poll connects a new device, so a node whose network process
    was restarted meanwhile (its edge says shutting_down, a heavily loaded machine) is asked again."""
    deadline = time.monotonic() + timeout
    waiting = list(nodes)
    while waiting:
        node = waiting[0]
        reply: Any
        try:
            asker = await connect("127.0.0.1", node.edge_ports[0], PrivateKey.generate(), auto_tickets=False)
            try:
                reply = await get_object(asker, key)
            finally:
                await asker.close()
        except (OSError, ProtocolError) as exc:
            reply = exc
        if isinstance(reply, RequestRefused) and reply.code == "not_found":
            waiting.pop(0)
            continue
        if time.monotonic() > deadline:
            raise AssertionError(f"0x{key.hex()} did not lapse on {node.data_dir.name}: {reply!r}")
        await asyncio.sleep(0.5)


async def move_data(opener: DeviceClient, target: DeviceClient, to: bytes | str, up: int, down: int) -> None:
    """Open a port from ``opener`` to ``to`` (``target``'s address or name), send ``up`` random
    bytes one way and ``down`` the other at once; both arrive intact (SHA-256); close."""
    port = await opener.open_port(to, "data")
    remote = await asyncio.wait_for(target.accept(), 10)
    sent_up, sent_down = os.urandom(up), os.urandom(down)

    async def send(p: Any, data: bytes) -> None:
        for i in range(0, len(data), 50_000):
            await p.write(data[i : i + 50_000])

    got_up, got_down, _, _ = await asyncio.gather(
        remote.readexactly(len(sent_up)), port.readexactly(len(sent_down)), send(port, sent_up),
        send(remote, sent_down),
    )  # fmt: skip
    assert hashlib.sha256(got_up).digest() == hashlib.sha256(sent_up).digest()
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(sent_down).digest()
    await port.close()
    assert await asyncio.wait_for(remote.read(), 10) == b""


async def open_when_found(opener: DeviceClient, target: DeviceClient, timeout: float) -> float:
    """Seconds until a port from ``opener`` reaches ``target`` (retrying while it is not found)."""
    started = time.monotonic()
    while True:
        try:
            await move_data(opener, target, target.address, 10_000, 10_000)
            return time.monotonic() - started
        except RequestRefused as exc:
            if exc.code not in ("not_found", "unavailable", "timeout"):
                raise
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{target.address.hex()} not reached in {timeout} s: {exc}") from exc
            await asyncio.sleep(0.3)


def metrics(node: NodeProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.rpc_port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def peer_history(node: NodeProcess) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{node.data_dir / 'chr-node.sqlite'}?mode=ro", uri=True)
    try:
        query = "SELECT peer_id, first_seen, last_seen, connection_count, reliability_score FROM peer_history"
        rows = db.execute(query).fetchall()
    finally:
        db.close()
    return rows if len(rows) == NODES - 1 else []


def register_name(net: Localnet, name: str, device: bytes) -> None:
    """Register BNS ``name`` for ``device`` on the localnet's anvil (the deployer pays)."""
    contracts = json.loads((net.nodes[0].data_dir / "contracts.json").read_text(encoding="utf-8"))
    with RemoteRpc([net.chain_url], int(contracts["chain_id"]), timeout=10.0) as rpc:
        bns = Bns(rpc, bytes.fromhex(contracts["bns"][2:]))
        bns.register(DEPLOYER, parse_name(name), [device], int(time.time()) + 86400)


def held_versions(node: NodeProcess) -> dict[str, tuple[int, float]]:
    """key (0x-hex) -> (version, expires_at) of the signed objects in a node's database."""
    db = sqlite3.connect(f"file:{node.data_dir / 'chr-node.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, version, expires_at FROM dht_objects").fetchall()
    finally:
        db.close()
    return {"0x" + bytes(key).hex(): (int(version), float(expires)) for key, version, expires in rows}


def merkle_runs(node: NodeProcess) -> list[dict[str, Any]]:
    return list(node.rpc("network_stats")["p2p"].get("merkle", {}).get("recent", []))


# ---- with every node up ----------------------------------------------------------------------------


def test_every_node_links_the_others(net: Localnet) -> None:
    addresses = {"0x" + address(n).hex() for n in net.nodes}
    for node in net.nodes:
        others = addresses - {"0x" + address(node).hex()}
        wait_until(f"{node.data_dir.name} links the others", lambda n=node, o=others: connected_peers(n) == o)
    stats = net.nodes[1].rpc("network_stats")["p2p"]
    assert stats["links"] == NODES - 1 and stats["dht"]["routing_table"] == NODES - 1
    assert stats["admission"]["pending"] == 0  # every inbound link proved its peer hello
    fleet = net.nodes[1].rpc("fleet_status")
    assert fleet["seeds_configured"] and fleet["connected_nodes"] == 1
    assert net.nodes[0].rpc("health")["layers"]["network"]["status"] == "ok"
    assert f"chr_p2p_links {NODES - 1}.0" in metrics(net.nodes[0])
    # peer_history, persisted through Model.Sql: one row per peer, first and last seen, links.
    rows = wait_until("peer_history rows of every peer", lambda: peer_history(net.nodes[0]), 10)
    assert {row[0] for row in rows} == addresses - {"0x" + address(net.nodes[0]).hex()}
    assert all(row[1] <= row[2] and row[3] >= 1 and 0 <= row[4] <= 1 for row in rows)


def test_devices_on_different_nodes_open_ports_by_address_and_by_name(net: Localnet) -> None:
    name = "lnet5target.chronara.ai"

    async def run() -> None:
        opener = await device_on(net.nodes[0], 301)
        target = await accepting_device_on(net.nodes[4], 302)
        named = await accepting_device_on(net.nodes[1], 303)
        by_name = await device_on(net.nodes[3], 304)
        try:
            await asyncio.to_thread(register_name, net, name, named.address)
            for client, key in ((opener, target.address), (by_name, named.address)):
                deadline = time.monotonic() + 30
                while not isinstance(await get_object(client, key), GetObjectReply):
                    assert time.monotonic() < deadline, "the target's location never reached the network"
                    await asyncio.sleep(0.3)
            await move_data(opener, target, target.address, 2 * 1024 * 1024 + 3, 512 * 1024 + 1)
            await move_data(by_name, named, name, 1024 * 1024 + 7, 1024 * 1024 + 11)
        finally:
            await asyncio.gather(
                *(c.close() for c in (opener, target, named, by_name)), return_exceptions=True
            )

    asyncio.run(run())

    def relayed(node: NodeProcess, least: int) -> bool:  # the network process reports once a second
        relay = node.rpc("network_stats")["p2p"].get("relay") or {}
        return relay.get("relayed_out", 0) >= least and relay.get("locations_found", 0) >= 1

    wait_until("node 0's relay figures in network_stats", lambda: relayed(net.nodes[0], 2 * 1024 * 1024), 10)
    wait_until("node 3's relay figures in network_stats", lambda: relayed(net.nodes[3], 1024 * 1024), 10)


def test_a_location_is_found_from_another_node_and_forgeries_are_refused(
    net: Localnet, tmp_path: Path
) -> None:
    node0 = net.nodes[0]

    async def run() -> None:
        device = await device_on(net.nodes[1], 101)
        asker = await device_on(net.nodes[2], 102)
        raw = await start_peer_node(tmp_path / "raw", PrivateKey.from_bytes((777).to_bytes(32, "big")))
        try:
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
            record = await asker.request(GetNode(node=address(node0)))
            assert isinstance(record, GetNodeReply)
            node_object = SignedObject.from_wire(record.record)
            assert node_object.kind == "node" and node_object.signer == address(node0)
            assert node_object.data["peer_port"] == int(node0.ports["peer2"])
            assert node_object.data["edge_ports"] == node0.edge_ports

            now = int(time.time())
            stranger = device_key(103).address  # a device no node serves
            refusals = [
                # A raw peer claims the device with a forged hello proof.
                (
                    make_hello_location(
                        raw.key, device.key.address, b"\1" * 32, b"\2" * 65, seq=2**62, expires=now + 60
                    ),
                    ("bad_signature", "mis_keyed"),
                ),
                # A node object for another node's key, signed by the raw peer.
                (
                    SignedObject.sign(
                        raw.key,
                        kind="node",
                        key=address(net.nodes[1]),
                        seq=2**62,
                        expires=now + 60,
                        data=dict(raw.record.data),
                    ),
                    ("mis_keyed",),
                ),
                # Its own node object, but long expired.
                (
                    SignedObject.sign(
                        raw.key,
                        kind="node",
                        key=raw.key.address,
                        seq=1,
                        expires=now - 3600,
                        data=dict(raw.record.data),
                    ),
                    ("expired",),
                ),
                # A location for a device with neither its ticket nor its hello proof.
                (
                    SignedObject.sign(
                        raw.key, kind="location", key=stranger, seq=1, expires=now + 60, data={}
                    ),
                    ("bad_payload",),
                ),
                # Signed by the raw peer, carrying node 1's signature bytes: it recovers to no one.
                (
                    SignedObject(
                        "location",
                        device.key.address,
                        raw.key.address,
                        found.object.seq + 1,
                        found.object.expires,
                        found.object.data,
                        found.object.signature,
                    ),
                    ("bad_signature",),
                ),
            ]
            for forged, codes in refusals:
                with pytest.raises(PeerError) as refused:
                    await link.ask(pm.Store(forged))
                assert refused.value.code in codes, (forged, refused.value)
            # The store is unchanged: the real location and node object are still the ones held,
            # nothing is held for the forged keys, and the link that carried the forgeries works.
            again = await link.ask(pm.FindValue(device.key.address))
            assert isinstance(again, pm.ValueFound) and again.object == found.object
            for key in (stranger, raw.key.address):
                answer = await link.ask(pm.FindValue(key))
                assert isinstance(answer, pm.Nodes), answer
            node1 = await link.ask(pm.FindValue(address(net.nodes[1])))  # the real one, not the fake
            assert isinstance(node1, pm.ValueFound) and node1.object.signer == address(net.nodes[1])
            assert await link.ask(pm.PeerPing()) is not None
        finally:
            await raw.stop()
            await device.close()
            await asker.close()

    asyncio.run(run())

    def counted() -> bool:  # the snapshot is republished once a second
        # Four reach the object checks and are counted by code; the fifth (a signature that
        # recovers to no one) is refused as the frame is parsed, before the DHT sees it.
        refused = node0.rpc("network_stats")["p2p"]["dht"]["refused"]
        return sum(refused.values()) >= 4 and {"mis_keyed", "expired", "bad_payload"} <= set(refused)

    wait_until("node 0 counts the refused STOREs by code", counted)


def test_an_idle_flood_on_a_peer_port_is_shed_while_the_network_works(net: Localnet, tmp_path: Path) -> None:
    # 150 TCP connections that never start TLS, from 20 addresses of one /24 (the default caps:
    # 16 per address, 64 per /24), against node 0's peer port, kept open (reopened when cut).
    node0 = net.nodes[0]
    sources = [f"127.0.3.{2 + i}" for i in range(20)]

    async def work() -> None:
        raw = await start_peer_node(tmp_path / "raw", PrivateKey.from_bytes((779).to_bytes(32, "big")))
        opener = await device_on(net.nodes[3], 501)
        target = await accepting_device_on(node0, 502)
        try:  # a new peer links to node 0, and a port from node 3 reaches a device on node 0
            link = await raw.network.connect(address(node0), "127.0.0.1", int(node0.ports["peer2"]))
            assert await link.ask(pm.PeerPing()) is not None
            assert await open_when_found(opener, target, timeout=20) < 20
        finally:
            await raw.stop()
            await asyncio.gather(opener.close(), target.close(), return_exceptions=True)

    with Slowloris("127.0.0.1", int(node0.ports["peer2"]), sources=sources, count=150) as flood:
        assert flood.opened >= 150
        asyncio.run(work())
        wait_until("node 0 sheds the flood", lambda: flood.closed_by_node > 0, 15)
    admission = wait_until(
        "node 0 reports the shedding",
        lambda: (a := node0.rpc("network_stats")["p2p"]["admission"])["shed_total"] > 0 and a,
        10,
    )
    assert admission["shed_total"] > 0, admission
    others = {"0x" + address(n).hex() for n in net.nodes[1:]}
    assert connected_peers(node0) >= others  # no proven link was shed


# ---- ORDER-DEPENDENT: node 2 killed, then restarted --------------------------------------------------


def test_kill_a_node_lookups_go_on_its_locations_lapse_and_a_moved_device_is_found(
    net: Localnet, tmp_path: Path
) -> None:
    async def run() -> None:
        moving = await accepting_device_on(net.nodes[KILLED], 201)
        staying = await device_on(net.nodes[KILLED], 205)
        elsewhere = await device_on(net.nodes[4], 206)  # a live device to look up after the kill
        watcher = await device_on(net.nodes[0], 202)
        opener = await device_on(net.nodes[1], 203)
        raw = await start_peer_node(tmp_path / "raw", PrivateKey.from_bytes((778).to_bytes(32, "big")))
        try:
            for key in (moving.address, staying.address, elsewhere.address):
                await wait_for_object(watcher, key, present=True)
            killed = "0x" + address(net.nodes[KILLED]).hex()
            live = [n for i, n in enumerate(net.nodes) if i != KILLED]
            net.kill_node(KILLED)
            killed_at = time.monotonic()
            for node in live:
                wait_until(
                    "the killed node's link is down", lambda n=node: killed not in connected_peers(n), 15
                )

            # The device reconnects to node 3 and a portopen from node 1 reaches it within seconds.
            moved = await accepting_device_on(net.nodes[3], 201)
            assert await open_when_found(opener, moved, timeout=10) < 10

            # Lookups still succeed: a newcomer joins through node 0 (whose table still names the
            # dead node) and finds a live device's location and every live node.
            joined = await raw.dht.join([raw_contact(net.nodes[0])])
            assert joined.ok
            found = await raw.dht.find_value(elsewhere.address)
            assert found is not None and found.signer == address(net.nodes[4])
            for node in live:
                assert (await raw.dht.lookup(address(node))).ok

            # The location of the device that did not come back lapses within its TTL (it was
            # last republished before the kill; the margin is for lookups past the dead node), on
            # every live node.
            await lapsed_everywhere(live, staying.address, timeout=LOCATION_TTL + 15)
            assert time.monotonic() - killed_at < LOCATION_TTL + 10
            await moved.close()
        finally:
            await raw.stop()
            await asyncio.gather(
                *(c.close() for c in (moving, staying, elsewhere, watcher, opener)), return_exceptions=True
            )

    asyncio.run(run())


def raw_contact(node: NodeProcess) -> Contact:
    return Contact(address(node), "127.0.0.1", int(node.ports["peer2"]))


def test_restart_the_node_converges_through_merkle_fetching_only_what_differs(net: Localnet) -> None:
    async def publish_while_down() -> list[bytes]:
        # Two devices come and go while node 2 is down: their locations stay live for
        # LOCATION_TTL but are no longer republished, so only MERKLE can bring them to node 2.
        device = await device_on(net.nodes[1], 401)
        watcher = await device_on(net.nodes[0], 402)
        await wait_for_object(watcher, device.key.address, present=True)
        await wait_for_object(watcher, watcher.key.address, present=True)
        await device.close()
        await watcher.close()
        return [device.key.address, watcher.key.address]

    async def check(node: NodeProcess, keys: list[bytes]) -> None:  # getobject on node 2 finds them
        asker = await device_on(node, 403)
        try:
            for key in keys:
                reply = await get_object(asker, key)
                assert isinstance(reply, GetObjectReply) and not isinstance(reply, ErrorReply)
        finally:
            await asker.close()

    keys = {"0x" + k.hex() for k in asyncio.run(publish_while_down())}
    live = [n for i, n in enumerate(net.nodes) if i != KILLED]
    before = [merkle_runs(n) for n in live]
    # What differs, from the databases: the live objects the others hold in a newer version than
    # node 2 had persisted when it was killed (it restores those at start); its own node object
    # aside (it makes a new one). Locations republished after the kill are among them.
    killed_key = net.addresses[KILLED].lower()  # its RPC is down with it
    had = held_versions(net.nodes[KILLED])
    now = time.time()
    newest: dict[str, tuple[int, float]] = {}
    for peer in live:
        for key, (version, expires) in held_versions(peer).items():
            if expires > now and version > newest.get(key, (-1, 0.0))[0]:
                newest[key] = (version, expires)
    differ = {k for k, (v, _) in newest.items() if v > had.get(k, (-1, 0.0))[0] and k != killed_key}
    assert keys <= differ and len(differ) < len(newest), (keys, differ, len(newest))
    node = net.restart(KILLED)
    me = "0x" + address(node).hex()

    def moved() -> tuple[set[str], set[str]] | None:
        """(keys that came into node 2, keys that went out of it), once its peers reconciled."""
        mine = node.rpc("network_stats")["p2p"].get("merkle")
        if mine is None or mine["runs"] < 2:
            return None
        into = {k for run in mine["recent"] for k in run["fetched"]}
        out = {k for run in mine["recent"] for k in run["pushed"]}
        for peer, old in zip(live, before, strict=True):
            for run in merkle_runs(peer):
                if run not in old and run["peer"] == me:
                    into |= set(run["pushed"])
                    out |= set(run["fetched"])
        lasting = {k for k in differ if newest[k][1] > time.time() + 2}  # not lapsing meanwhile
        return (into, out) if into >= keys | lasting else None

    into, out = wait_until("what differs came to the restarted node through MERKLE", moved)
    # Only what differs moved: nothing of the objects node 2 restored from its database (the
    # other nodes' objects and the older locations), at most its own new node object out.
    assert keys <= into <= differ, (into, differ)
    assert out <= {me}
    merkle = node.rpc("network_stats")["p2p"]["merkle"]
    # The count node 2 reports: each object it took in through MERKLE counted once, all of them
    # among what differed. Its peers hold only objects that pass the rules, so a refusal can only
    # be an object that lapsed at the peer between the comparison and the fetch (short TTL here).
    # (once per run: each peer is asked).
    lapsed = {k for k in differ if newest[k][1] <= time.time() + 5}
    assert merkle["fetched"] <= len(differ), (merkle, differ)
    assert merkle["refused"] <= len(lapsed) * merkle["runs"], (merkle, lapsed)
    assert len(into) <= len(differ) < len(newest)  # the count: what differs, not all that is held
    asyncio.run(check(node, [bytes.fromhex(k[2:]) for k in keys]))
