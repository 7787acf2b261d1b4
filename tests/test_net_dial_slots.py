"""Dials in progress count apart from links (issue 10): contacts that accept TCP and never answer
hold dial slots for the dial deadline, never links, so real peers still get links meanwhile, both
dialled and inbound. Real TLS nodes on loopback (chrnode.testing.peers) and real silent sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from chrnode.crypto import PrivateKey
from chrnode.net.peers import PeerNetworkConfig
from chrnode.peer import messages as pm
from chrnode.peer.link_send import PeerError
from chrnode.peer.pool import PoolConfig, State
from chrnode.testing.edge import async_test
from chrnode.testing.peers import start_peer_node

pytestmark = pytest.mark.slow

DIAL_TIMEOUT = 1.5


@asynccontextmanager
async def black_holes(count: int) -> AsyncIterator[list[int]]:
    """Ports that take TCP and never say a word: half accept and hold the connection open, half
    leave it in the kernel's backlog (the TLS handshake never starts either way)."""
    done = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await done.wait()

    servers = [await asyncio.start_server(hold, "127.0.0.1", 0) for _ in range(count - count // 2)]
    backlogs = []
    for _ in range(count // 2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # never accepted
        backlogs.append(sock)
    ports = [s.sockets[0].getsockname()[1] for s in servers] + [s.getsockname()[1] for s in backlogs]
    try:
        yield ports
    finally:
        done.set()
        for writer in held:
            writer.close()
        for server in servers:
            server.close()
            await server.wait_closed()
        for sock in backlogs:
            sock.close()


@async_test(timeout=90)
async def test_black_holed_contacts_do_not_keep_real_peers_out(tmp_path: Path) -> None:
    config = PeerNetworkConfig(pool=PoolConfig(max_links=3, max_dials=8), dial_timeout=DIAL_TIMEOUT)
    keys = [PrivateKey.from_bytes((0x900 + n).to_bytes(32, "big")) for n in range(4)]
    node = await start_peer_node(tmp_path / "n", keys[0], net_config=config)
    real = [await start_peer_node(tmp_path / f"r{i}", keys[i + 1]) for i in range(3)]
    fake = [PrivateKey.from_bytes((0xB1AC0 + n).to_bytes(32, "big")).address for n in range(4)]
    try:
        async with black_holes(len(fake)) as ports:
            started = time.monotonic()
            holes = [
                asyncio.ensure_future(node.network.connect(addr, "127.0.0.1", port))
                for addr, port in zip(fake, ports, strict=True)
            ]
            await asyncio.sleep(0.2)  # the black holes are dialling (TCP up, no TLS answer)
            dialling = [p for p in node.network.pool.peers.values() if p.state is State.DIALING]
            assert len(dialling) == len(fake) > config.pool.max_links
            # Meanwhile real peers get links: two dialled by us, one dialling in.
            dialled = [
                await node.network.connect(r.key.address, "127.0.0.1", r.contact.peer_port) for r in real[:2]
            ]
            inbound = await real[2].network.connect(node.key.address, "127.0.0.1", node.contact.peer_port)
            for link in (*dialled, inbound):
                assert await link.ask(pm.PeerPing()) is not None
            assert all(node.network.pool.is_up(r.key.address) for r in real)
            assert node.network.pool.evictions == 0
            # The black holes fail at the dial deadline, not the old handshake + hello timeouts.
            results = await asyncio.gather(*holes, return_exceptions=True)
            took = time.monotonic() - started
            assert all(isinstance(r, PeerError) and r.code == "unavailable" for r in results), results
            assert took < DIAL_TIMEOUT + 2.0, took
            assert not any(p.state is State.DIALING for p in node.network.pool.peers.values())
            assert sorted(node.network.links) == sorted(r.key.address for r in real)
    finally:
        await node.stop()
        for r in real:
            await r.stop()


@async_test(timeout=90)
async def test_a_dial_waits_for_a_slot_the_black_holes_hold_and_then_gets_its_link(tmp_path: Path) -> None:
    config = PeerNetworkConfig(pool=PoolConfig(max_links=8, max_dials=2), dial_timeout=DIAL_TIMEOUT)
    node = await start_peer_node(
        tmp_path / "n", PrivateKey.from_bytes((0x920).to_bytes(32, "big")), net_config=config
    )
    real = await start_peer_node(tmp_path / "r", PrivateKey.from_bytes((0x921).to_bytes(32, "big")))
    fake = [PrivateKey.from_bytes((0xB1AD0 + n).to_bytes(32, "big")).address for n in range(2)]
    try:
        async with black_holes(len(fake)) as ports:
            holes = [
                asyncio.ensure_future(node.network.connect(addr, "127.0.0.1", port))
                for addr, port in zip(fake, ports, strict=True)
            ]
            await asyncio.sleep(0.2)
            started = time.monotonic()
            # Both slots are held: the real peer waits (not failed at once: a DHT request would
            # count that against the contact), then is dialled when a black hole's deadline ends.
            link = await node.network.connect(real.key.address, "127.0.0.1", real.contact.peer_port)
            waited = time.monotonic() - started
            assert await link.ask(pm.PeerPing()) is not None
            assert DIAL_TIMEOUT - 0.5 < waited < 2 * DIAL_TIMEOUT + 1.0, waited
            assert all(isinstance(r, PeerError) for r in await asyncio.gather(*holes, return_exceptions=True))
            assert node.network.links.get(real.key.address) is link
    finally:
        await node.stop()
        await real.stop()
