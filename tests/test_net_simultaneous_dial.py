"""Two nodes that dial each other at once (issue 10; seen in the five-node localnet under load):
each end has an inbound and an outbound link to the other. Both must keep the same one, else each
closes the link the other kept and they are left with none. Real TLS nodes on loopback in one
process (chrnode.testing.peers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chrnode.crypto import PrivateKey
from chrnode.peer import messages as pm
from chrnode.peer.link import PeerLink
from chrnode.testing.edge import async_test, wait_for
from chrnode.testing.peers import PeerNode, start_peer_node

pytestmark = pytest.mark.slow


async def settled(a: PeerNode, b: PeerNode) -> tuple[PeerLink, PeerLink]:
    """The one link each holds to the other, once no duplicate is being closed."""

    def one_each() -> bool:
        la, lb = a.network.links.get(b.key.address), b.network.links.get(a.key.address)
        return la is not None and lb is not None and not la.closed and not lb.closed

    await wait_for(one_each, 10, "a link on both sides")
    await asyncio.sleep(0.3)  # a duplicate closed now would show as a link down
    await wait_for(one_each, 10, "a link on both sides after the duplicates closed")
    return a.network.links[b.key.address], b.network.links[a.key.address]


@async_test(timeout=120)
async def test_nodes_that_dial_each_other_at_once_keep_one_and_the_same_link(tmp_path: Path) -> None:
    for round_ in range(8):
        keys = [PrivateKey.from_bytes((0x700 + 2 * round_ + n).to_bytes(32, "big")) for n in (0, 1)]
        a = await start_peer_node(tmp_path / f"r{round_}a", keys[0])
        b = await start_peer_node(tmp_path / f"r{round_}b", keys[1])
        try:
            got = await asyncio.gather(
                a.network.connect(b.key.address, "127.0.0.1", b.contact.peer_port),
                b.network.connect(a.key.address, "127.0.0.1", a.contact.peer_port),
                return_exceptions=True,
            )
            la, lb = await settled(a, b)
            # At most two connections join them, one dialled by each: the same one is the dialer's
            # outbound link and the listener's inbound link.
            assert la.dialer != lb.dialer, "the two ends kept different links"
            for link in (la, lb):
                assert await link.ask(pm.PeerPing()) is not None
            # What connect() gave each caller is the link that was kept (or it failed cleanly).
            for mine, result in ((la, got[0]), (lb, got[1])):
                assert result is mine or isinstance(result, Exception), (round_, result)
        finally:
            await a.stop()
            await b.stop()
