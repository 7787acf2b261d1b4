"""A hostile peer against real nodes (issue 10, Bad input): it replays the peer hello on a proven
link, floods FIND_NODE or STORE, and answers FIND_NODE with unreachable, silent or forged contacts. It is
refused with its codes and dropped when it persists; the routing table keeps only contacts that
answered themselves, and an honest peer's traffic goes on. Real TLS nodes on loopback in one
process (chrnode.testing.peers)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from chrnode.crypto import PrivateKey
from chrnode.dht.node import DhtConfig
from chrnode.objects.kinds import NodeRecord, make_node_object
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm
from chrnode.peer.hello import make_peer_hello
from chrnode.peer.link import MAX_FAULTS, PeerLink
from chrnode.peer.link_send import PeerError
from chrnode.testing.edge import async_test, wait_for
from chrnode.testing.peers import PeerNode, start_peer_nodes

pytestmark = pytest.mark.slow

CFG = DhtConfig(k=4, hard_timeout=2.0, rtt_initial=0.5)


async def joined(tmp_path: Path, count: int) -> list[PeerNode]:
    nodes = await start_peer_nodes(tmp_path, count, dht_config=CFG, first_key=0x900)
    for node in nodes[1:]:
        assert (await node.dht.join([nodes[0].contact])).ok
    return nodes


async def stop_all(nodes: list[PeerNode]) -> None:
    for node in nodes:
        await node.stop()


async def link_to(peer: PeerNode, target: PeerNode) -> PeerLink:
    return await peer.network.connect(target.key.address, "127.0.0.1", target.contact.peer_port)


@async_test(timeout=60)
async def test_a_hello_replayed_on_a_proven_link_is_refused_then_the_link_is_dropped(tmp_path: Path) -> None:
    victim, honest, hostile = await joined(tmp_path, 3)
    try:
        link = await link_to(hostile, victim)
        honest_link = await link_to(honest, victim)
        assert link.conn is not None
        replay = make_peer_hello(hostile.key, link.conn.channel_binding(), victim.key.address, hostile.record)
        with pytest.raises(PeerError) as refused:
            await link.ask(replay)
        assert refused.value.code == "unexpected_message"
        assert not link.closed and await link.ask(pm.PeerPing()) is not None  # one fault is forgiven
        # It keeps replaying: past MAX_FAULTS the victim drops the link.
        results = await asyncio.gather(
            *(link.ask(replay, timeout=3.0) for _ in range(MAX_FAULTS + 5)), return_exceptions=True
        )
        assert all(isinstance(r, PeerError) for r in results)
        assert {r.code for r in results if isinstance(r, PeerError)} <= {"unexpected_message", "timeout"}
        await wait_for(lambda: hostile.key.address not in victim.network.links, 5, "the link to be dropped")
        # The honest peer's link was never touched, and it is still in the table.
        assert victim.network.links[honest.key.address] is not None and not honest_link.closed
        assert await honest_link.ask(pm.PeerPing()) is not None
        assert honest.key.address in victim.dht.node.table
    finally:
        await stop_all([victim, honest, hostile])


def flood_of(kind: str, hostile: PeerNode, victim: PeerNode, count: int) -> list[Any]:
    """``count`` requests of one kind: FIND_NODE for many targets, or STOREs of node objects the
    hostile peer signs for keys not its own (each refused mis_keyed)."""
    if kind == "find_node":
        return [pm.FindNode(i.to_bytes(20, "big")) for i in range(count)]
    now = int(time.time())
    return [
        pm.Store(
            SignedObject.sign(
                hostile.key,
                kind="node",
                key=i.to_bytes(20, "big"),
                seq=now * 1000 + i,
                expires=now + 600,
                data=dict(hostile.record.data),
            )
        )
        for i in range(1, count + 1)
    ]


@pytest.mark.parametrize("kind", ["find_node", "store"])
@async_test(timeout=60)
async def test_a_flood_is_rate_limited_and_dropped_while_an_honest_peer_works(
    tmp_path: Path, kind: str
) -> None:
    victim, honest, hostile = await joined(tmp_path, 3)
    try:
        link = await link_to(hostile, victim)
        honest_link = await link_to(honest, victim)
        table_before = {c.address for c in victim.dht.node.table}
        held_before = len(victim.dht.node.store)
        requests = flood_of(kind, hostile, victim, 1000)
        started = time.monotonic()
        flood = asyncio.gather(*(link.ask(r, timeout=5.0) for r in requests), return_exceptions=True)
        honest_answers = [await honest_link.ask(pm.FindNode(b"\x42" * 20)) for _ in range(5)]
        results = await flood
        elapsed = time.monotonic() - started
        assert all(isinstance(a, pm.Nodes) and a.nodes for a in honest_answers)
        # Served: FIND_NODE answered, STORE refused by the object rules (a peer signs only its own
        # node object); then rate limited, then dropped.
        served = [r for r in results if isinstance(r, pm.Nodes) or getattr(r, "code", "") == "mis_keyed"]
        limited = [r for r in results if isinstance(r, PeerError) and r.code == "rate_limited"]
        assert served and limited, (len(served), len(limited))
        # The burst, and what refilled while the victim worked through the flood (on a loaded
        # machine that takes longer than the 0.5 s an idle one needs: the bound is the rate's).
        refilled = link.config.requests_per_second * elapsed
        assert len(served) <= link.config.burst + refilled + 10, (len(served), elapsed)
        # A flood that persists costs the flooder its link; the honest link is untouched.
        await wait_for(
            lambda: hostile.key.address not in victim.network.links, 5, "the flood link to be dropped"
        )
        assert not honest_link.closed and await honest_link.ask(pm.PeerPing()) is not None
        assert {c.address for c in victim.dht.node.table} >= table_before - {hostile.key.address}
        assert len(victim.dht.node.store) == held_before  # nothing of the STOREs was kept
    finally:
        await stop_all([victim, honest, hostile])


@contextmanager
def dead_and_silent_ports() -> Iterator[tuple[int, int]]:
    """A port nothing listens on (connections refused) and one that accepts TCP and never speaks."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = closed.getsockname()[1]
    closed.close()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # never accepted: the TLS handshake never starts
    try:
        yield dead, silent.getsockname()[1]
    finally:
        silent.close()


def fake_contacts(ports: tuple[int, int], count: int) -> list[SignedObject]:
    """Well-signed node objects of keys no node has, at a dead or a silent port."""
    now = int(time.time())
    out = []
    for i in range(count):
        key = PrivateKey.from_bytes((0xFA0000 + i).to_bytes(32, "big"))
        record = NodeRecord(key.address, "127.0.0.1", (), ports[i % 2], 2, 31337)
        out.append(make_node_object(key, record, seq=now * 1000, expires=now + 600))
    return out


def lie_with(liar: PeerNode, answer: Any) -> list[int]:
    """Make ``liar`` answer every FIND_NODE with ``answer`` (a Nodes); the list counts the lies."""
    told: list[int] = []

    def handler(link: PeerLink, msg: Any, request_id: int | None) -> None:
        if isinstance(msg, pm.FindNode):
            told.append(1)
            link.answer(request_id, answer)
        else:
            liar.dht._request(link, msg, request_id)

    liar.network.handlers[pm.FIND_NODE] = handler
    return told


@async_test(timeout=90)
async def test_fake_contacts_in_find_node_answers_never_enter_the_routing_table(tmp_path: Path) -> None:
    nodes = await joined(tmp_path, 5)
    victim, liar = nodes[1], nodes[4]
    try:
        with dead_and_silent_ports() as ports:
            fakes = fake_contacts(ports, 8)
            told = lie_with(liar, pm.Nodes(tuple(fakes)))
            await link_to(liar, victim)  # the liar answered itself: it is a contact of the victim
            await wait_for(lambda: liar.key.address in victim.dht.node.table, 5, "the liar in the table")
            honest = {n.key.address for n in nodes} - {victim.key.address, liar.key.address}
            # Lookups next to the liar's id, so the liar is among the first asked.
            for i in range(3):
                target = bytes(
                    a ^ b for a, b in zip(liar.key.address, (i + 1).to_bytes(20, "big"), strict=True)
                )
                result = await victim.dht.lookup(target)
                assert result.ok
                assert {c.address for c in result.closest} <= honest | {liar.key.address}
            assert told, "the liar was never asked"
            fake_keys = {f.key for f in fakes}
            # The victim did try them (dialled: refused, or stuck in a TLS handshake that never
            # starts) and none answered: wait until every dial is over (the silent ones at the
            # handshake timeout), then look at the table.
            peers = victim.network.pool.peers
            assert fake_keys & set(peers), "no fake contact was ever tried"

            def dials_over() -> bool:
                return all(peers[k].state.value != "dialing" for k in fake_keys if k in peers)

            await wait_for(dials_over, 15, "the dials of the fake contacts to fail")
            assert not fake_keys & {c.address for c in victim.dht.node.table.pending()}
            table = {c.address for c in victim.dht.node.table}
            assert not table & fake_keys, "a fake contact entered the routing table"
            assert honest <= table
            # Nor are they redialled for ever: each is forgotten when its backoff ends (the
            # pool's tick, once a second), and no peer_history row is written for them.
            backoff = victim.network.pool.config.backoff_initial
            await asyncio.sleep(backoff)
            await wait_for(lambda: not fake_keys & set(peers), backoff + 5, "the pool to forget the fakes")
            # Lookups from the victim still find every honest node.
            for node in nodes:
                if node is not victim and node is not liar:
                    assert (await victim.dht.lookup(node.key.address)).ok
    finally:
        await stop_all(nodes)


@async_test(timeout=60)
async def test_find_node_answers_with_forged_records_are_refused_whole(tmp_path: Path) -> None:
    nodes = await joined(tmp_path, 4)
    victim, liar = nodes[1], nodes[3]
    try:
        honest = nodes[2]
        now = int(time.time())
        # The liar signs a record that claims an honest node's key at the liar's own port: the
        # key does not match the signer (mis_keyed), so the whole answer counts for nothing.
        stolen = SignedObject.sign(
            liar.key,
            kind="node",
            key=honest.key.address,
            seq=now * 1000 + 7,
            expires=now + 600,
            data=dict(liar.record.data),
        )
        told = lie_with(liar, pm.Nodes((stolen,)))
        await link_to(liar, victim)
        await wait_for(lambda: liar.key.address in victim.dht.node.table, 5, "the liar in the table")
        failed_before = victim.dht.node.counters["requests_failed"]
        result = await victim.dht.lookup(liar.key.address)
        assert result.ok and told
        assert victim.dht.node.counters["requests_failed"] > failed_before  # the lie counted as a failure
        kept = victim.dht.node.table.get(honest.key.address)
        assert kept is not None and kept.peer_port == honest.contact.peer_port  # the real one, not the lie
        assert (await victim.dht.lookup(honest.key.address)).ok
    finally:
        await stop_all(nodes)
