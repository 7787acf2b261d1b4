"""Ports across nodes (SPEC 4 relay messages, SPEC 6 locations): devices on different nodes open
ports to each other by address, move data intact both ways, close from either side, and a device
that moves to another node is found there."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from chrnode.crypto import PrivateKey
from chrnode.device.client import DeviceClient, PortOffer
from chrnode.dht.node import DhtConfig
from chrnode.errors import RequestRefused
from chrnode.testing.edge import async_test, wait_for
from chrnode.testing.netnodes import NetNode, start_net_nodes

pytestmark = pytest.mark.slow

DHT = DhtConfig(k=4, hard_timeout=2.0, rtt_initial=0.5)


async def accepting(node: NetNode, key: PrivateKey | None = None) -> DeviceClient:
    client = await node.edge.device(key)

    async def accept(_offer: PortOffer) -> bool:
        return True

    client.on_portopen = accept
    return client


async def stop_all(nodes: list[NetNode], *clients: DeviceClient) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    for node in nodes:
        await node.stop()


@async_test(timeout=120)
async def test_a_port_across_two_nodes_moves_data_intact_both_ways(tmp_path: Path) -> None:
    nodes = await start_net_nodes(tmp_path, 3, DHT)
    a, b = nodes[0], nodes[2]
    opener = await a.edge.device()
    target = await accepting(b)
    try:
        await b.announce(target.key)
        port = await opener.open_port(target.address, "files")
        remote = await target.accept()
        assert remote.ref == port.ref and remote.peer == opener.address
        up, down = os.urandom(3 * 1024 * 1024 + 17), os.urandom(1024 * 1024 + 5)

        async def send(p: object, data: bytes) -> None:
            for i in range(0, len(data), 60_000):
                await p.write(data[i : i + 60_000])  # type: ignore[attr-defined]

        async def receive(p: object, size: int) -> bytes:
            return await p.readexactly(size)  # type: ignore[attr-defined]

        got_up, got_down, _, _ = await asyncio.gather(
            receive(remote, len(up)), receive(port, len(down)), send(port, up), send(remote, down)
        )
        assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
        assert a.relay.status()["relayed_out"] >= len(up) and b.relay.status()["relayed_out"] >= len(down)
        await port.close()  # from the opener: the target sees it across the link
        assert await remote.read() == b""
        await wait_for(
            lambda: a.edge.server.ports.count == 0 and b.edge.server.ports.count == 0, what="closed"
        )
        # And from the target's side.
        port = await opener.open_port(target.address, "again")
        remote = await target.accept()
        await remote.write(b"bye")
        await remote.close()
        assert await port.read() == b"bye" and await port.read() == b""
    finally:
        await stop_all(nodes, opener, target)


@async_test(timeout=120)
async def test_unknown_and_refusing_devices_across_nodes(tmp_path: Path) -> None:
    nodes = await start_net_nodes(tmp_path, 2, DHT)
    a, b = nodes
    opener = await a.edge.device()
    refusing = await b.edge.device()  # no on_portopen: refuses every port
    try:
        with pytest.raises(RequestRefused) as info:
            await opener.open_port(PrivateKey.generate().address, 1)
        assert info.value.code == "not_found"
        await b.announce(refusing.key)
        with pytest.raises(RequestRefused) as info:
            await opener.open_port(refusing.address, 1)
        assert info.value.code == "refused"
        assert a.edge.server.ports.count == 0 and b.edge.server.ports.count == 0
    finally:
        await stop_all(nodes, opener, refusing)


@async_test(timeout=120)
async def test_a_device_that_moves_is_found_at_its_new_node(tmp_path: Path) -> None:
    nodes = await start_net_nodes(tmp_path, 3, DHT)
    a, b, c = nodes
    key = PrivateKey.generate()
    opener = await a.edge.device()
    target = await accepting(b, key)
    try:
        await b.announce(key)
        port = await opener.open_port(key.address, "x")
        await target.accept()
        await port.close()
        await target.close()
        await wait_for(lambda: key.address not in b.edge.server.devices, what="left b")
        target = await accepting(c, key)
        new = await c.announce(key)  # a newer location (higher seq) from its new node

        def landed() -> bool:  # the STOREs reached the k closest (every node, with k = 4)
            held = [n.dht.node.store.get(key.address, time.time()) for n in nodes]
            return all(v is not None and v.seq == new.seq for v in held)

        await wait_for(landed, what="the new location stored")
        port = await opener.open_port(key.address, "y")  # a's cache still says b: b says not_found
        remote = await target.accept()
        await port.write(b"found you")
        assert await remote.read() == b"found you"
    finally:
        await stop_all(nodes, opener, target)


@async_test(timeout=120)
async def test_a_closed_link_closes_its_ports_on_both_nodes(tmp_path: Path) -> None:
    nodes = await start_net_nodes(tmp_path, 2, DHT)
    a, b = nodes
    opener = await a.edge.device()
    target = await accepting(b)
    try:
        await b.announce(target.key)
        port = await opener.open_port(target.address, "x")
        remote = await target.accept()
        link = a.network.links[b.key.address]
        link.close()
        assert await port.read() == b"" and await remote.read() == b""
        await wait_for(
            lambda: a.edge.server.ports.count == 0 and b.edge.server.ports.count == 0, what="closed"
        )
    finally:
        await stop_all(nodes, opener, target)
