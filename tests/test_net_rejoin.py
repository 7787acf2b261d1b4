"""Rejoin with real nodes: a node whose routing table emptied (its only contact died) joins
through its fleet node again, with backoff, and is back in the network when that node returns."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from chrnode.dht.node import DhtConfig
from chrnode.net.codecs import contact_of
from chrnode.testing.edge import async_test, wait_for
from chrnode.testing.netnodes import NetNode, start_net_node, start_net_nodes

pytestmark = pytest.mark.slow

CFG = DhtConfig(k=4, hard_timeout=1.0, rtt_initial=0.3, max_failures=1, rejoin_initial=0.2, rejoin_max=1.0)


@async_test(timeout=90)
async def test_a_node_whose_table_emptied_rejoins_through_its_fleet_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chrnode.dht")
    seed, node = await start_net_nodes(tmp_path, 2, CFG)  # node joined through seed, its fleet node
    back: NetNode | None = None
    try:
        assert [c.address for c in node.dht.node.table] == [seed.key.address]
        port = contact_of(seed.record).peer_port
        await seed.stop()
        # Its only contact is gone: the next lookup fails it, and the table is empty.
        assert not (await node.dht.lookup(b"\x42" * 20)).ok
        assert len(node.dht.node.table) == 0
        assert "routing table is empty" in caplog.text
        # Attempts while the fleet node is down leave it empty and are retried, with backoff.
        await wait_for(lambda: node.dht.node.counters["rejoins"] >= 2, 20, "two rejoin attempts")
        assert "next attempt in" in caplog.text and len(node.dht.node.table) == 0
        back = await start_net_node(tmp_path / "node0", 0, CFG, peer_port=port)
        assert back.key.address == seed.key.address
        # Nothing redials it (it is not pinned here): only the rejoin brings the two together.
        await wait_for(
            lambda: seed.key.address in node.dht.node.table and node.key.address in back.dht.node.table,
            30,
            "the node back in the network",
        )
        await wait_for(lambda: "joined the network: 1 contacts" in caplog.text, 10, "the rejoin's end")
        assert (await node.dht.lookup(b"\x42" * 20)).ok
    finally:
        await node.stop()
        if back is not None:
            await back.stop()
