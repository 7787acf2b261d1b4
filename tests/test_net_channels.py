"""Channels across nodes: subscribers on another node join through the relay (its portopen carries
the ``s``), the channel lives on the target's node, and what the target sends reaches them all."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from chrnode.device.client import Port, PortOffer
from chrnode.dht.node import DhtConfig
from chrnode.testing.edge import async_test, wait_for
from chrnode.testing.netnodes import start_net_nodes

pytestmark = pytest.mark.slow

DHT = DhtConfig(k=4, hard_timeout=2.0, rtt_initial=0.5)


async def _digest(port: Port, size: int) -> bytes:
    return hashlib.sha256(await port.readexactly(size)).digest()


@async_test(timeout=120)
async def test_subscribers_on_two_nodes_share_one_channel_on_the_targets_node(tmp_path: Path) -> None:
    here, there = await start_net_nodes(tmp_path, 2, DHT)
    target = await there.edge.device()
    offers: list[PortOffer] = []

    async def accept(offer: PortOffer) -> bool:
        offers.append(offer)
        return True

    target.on_portopen = accept
    target.shared_ports.add("live")
    owner, remote_reader = await here.edge.device(), await here.edge.device()
    local_reader = await there.edge.device()
    clients = [target, owner, remote_reader, local_reader]
    try:
        await there.announce(target.key)
        a = await owner.open_port(target.address, "live", "rws")  # through the relay
        channel = await target.accept()
        b = await remote_reader.open_port(target.address, "live", "rs")
        c = await local_reader.open_port(target.address, "live", "rs")
        assert offers == [PortOffer(a.ref, owner.address, "live", "rws")]  # one consent
        assert here.edge.server.snapshot()["channels"]["channels"] == 0  # it lives on the target's node
        status = there.edge.server.snapshot()["channels"]
        assert status["channels"] == 1 and status["members"] == 3

        data = os.urandom(3 << 20)
        writer = asyncio.ensure_future(channel.write(data))
        digests = await asyncio.gather(*(_digest(p, len(data)) for p in (a, b, c)))
        await writer
        assert digests == [hashlib.sha256(data).digest()] * 3
        await a.write(b"from the owner on the other node")
        assert await channel.readexactly(32) == b"from the owner on the other node"

        await b.close()  # a remote member leaves: the relay portclose takes it out
        await wait_for(lambda: there.edge.server.snapshot()["channels"]["members"] == 2, what="b left")
        await channel.write(b"after b")
        assert await a.readexactly(7) == b"after b" and await c.readexactly(7) == b"after b"

        await channel.close()  # the target ends it: every member's port closes, across the link too
        assert await a.read() == b"" and await c.read() == b""
        await wait_for(
            lambda: (
                here.edge.server.snapshot()["ports_open"] == 0
                and there.edge.server.snapshot()["ports_open"] == 0
            ),
            what="ports closed on both nodes",
        )
        assert await owner.ping() > 0 and await remote_reader.ping() > 0
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        for node in (here, there):
            await node.stop()
