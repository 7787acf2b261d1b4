"""Ports need the target's consent and pending opens are bounded (issue 8 item 3), against a node
on real TLS sockets: the shared-port takeover and the portopen spam of the issue, as an attacker
with raw frames would send them."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest

from chrnode.crypto import PrivateKey
from chrnode.device.client import PortOffer
from chrnode.edge import codes
from chrnode.edge.ports import MAX_PENDING_OPENS, MAX_PENDING_PER_TARGET
from chrnode.errors import RequestRefused
from chrnode.testing.edge import NodeThread, RawFrameClient, async_test, start_node, wait_for

PORTOPEN, PORTSEND = 0x03, 0x04
RESPONSE, ERROR = 0x0001, 0x0002


@async_test()
async def test_a_second_opener_of_a_shared_port_is_asked_and_a_refusal_keeps_it_out(
    tmp_path: Path,
) -> None:
    """A opens {B, 9000, rws}, B accepts; C sends the same portopen: B is asked, refuses, and C
    neither gets a ref nor reads what B sends to A."""
    node = await start_node(tmp_path)
    try:
        a, b, c = await node.device(), await node.device(), await node.device()
        offers: list[PortOffer] = []

        async def only_a(offer: PortOffer) -> bool:
            offers.append(offer)
            return offer.device == a.address

        b.on_portopen = only_a
        port_a = await a.open_port(b.address, 9000, "rws")
        remote = await b.accept()
        with pytest.raises(RequestRefused) as refusal:
            await c.open_port(b.address, 9000, "rws")
        assert refusal.value.code == codes.REFUSED
        assert [o.device for o in offers] == [a.address, c.address]
        await remote.write(b"for a only")
        assert await port_a.read() == b"for a only"
        # C holds no port at all: it can neither read B's data nor write to B as A
        assert node.server.devices[c.address].ports == {}
        assert await c.ping() > 0
        assert node.server.snapshot()["ports_open"] == 1
        await asyncio.gather(a.close(), b.close(), c.close())
    finally:
        await node.stop()


def _node(tmp_path: Path, **overrides: Any) -> NodeThread:
    return NodeThread(
        tmp_path,
        conn_rate_per_ip=10_000.0,
        frame_rate_per_device=100_000.0,
        connection_timeout=60.0,
        **overrides,
    )


def _portopens_seen(client: RawFrameClient, quiet: float = 1.0) -> list[dict[str, Any]]:
    """Every portopen request the (never answering) target has received until ``quiet`` s pass."""
    seen: list[dict[str, Any]] = []
    client.sock.settimeout(quiet)
    try:
        while True:
            msg_type, flags, payload = client.recv()
            if msg_type == PORTOPEN and not flags & RESPONSE:
                seen.append(payload)
    except (TimeoutError, ssl.SSLError):
        return seen


def _answers(client: RawFrameClient, count: int) -> list[dict[str, Any]]:
    answers = []
    while len(answers) < count:
        msg_type, flags, payload = client.recv()
        if msg_type == PORTOPEN and flags & RESPONSE:
            answers.append(payload)
    return answers


def _answers_until_quiet(client: RawFrameClient, quiet: float = 1.0) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    client.sock.settimeout(quiet)
    try:
        while True:
            answers.extend(_answers(client, 1))
    except (TimeoutError, ssl.SSLError):
        return answers


def test_portopen_spam_from_one_opener_is_bounded(tmp_path: Path) -> None:
    thread = _node(tmp_path)
    try:
        target, opener = thread.raw(), thread.raw()
        target_key = PrivateKey.generate()
        target.hello(target_key, thread.node.address)
        opener.hello(PrivateKey.generate(), thread.node.address)
        for i in range(300):
            opener.send(PORTOPEN, {"id": 10 + i, "device": target_key.address, "port": 9000})
        busy = _answers(opener, 300 - MAX_PENDING_OPENS)
        assert {(a["code"], a["id"] >= 10 + MAX_PENDING_OPENS) for a in busy} == {(codes.BUSY, True)}
        assert "unanswered portopens" in busy[0]["message"]
        forwarded = _portopens_seen(target)
        assert len(forwarded) == MAX_PENDING_OPENS
        assert len({p["ref"] for p in forwarded}) == MAX_PENDING_OPENS
        assert thread.run(lambda: thread.node.server.snapshot()["ports_open"]) == 0
    finally:
        thread.stop()


def test_portopens_waiting_on_one_target_are_bounded_across_openers(tmp_path: Path) -> None:
    thread = _node(tmp_path)
    try:
        target = thread.raw()
        target_key = PrivateKey.generate()
        target.hello(target_key, thread.node.address)
        openers = [thread.raw() for _ in range(4)]
        per_opener = 30  # under the per-opener limit; 120 in all, over the per-target one
        for opener in openers:
            opener.hello(PrivateKey.generate(), thread.node.address)
            for i in range(per_opener):
                opener.send(PORTOPEN, {"id": i, "device": target_key.address, "port": "svc"})
        forwarded = _portopens_seen(target)
        assert len(forwarded) == MAX_PENDING_PER_TARGET
        refused = 0
        for opener in openers:
            answers = _answers_until_quiet(opener)
            assert all(a["code"] == codes.BUSY for a in answers)
            refused += len(answers)
        assert refused == 4 * per_opener - MAX_PENDING_PER_TARGET
        # once the target answers, a new opener gets through again
        for request in forwarded[:1]:
            target.send(PORTOPEN, {"id": request["id"]}, flags=RESPONSE)
        late = thread.raw()
        late.hello(PrivateKey.generate(), thread.node.address)
        late.send(PORTOPEN, {"id": 1, "device": target_key.address, "port": "svc"})
        assert len(_portopens_seen(target)) == 1
    finally:
        thread.stop()


@async_test()
async def test_an_opener_that_leaves_frees_its_pending_count_on_the_answer(tmp_path: Path) -> None:
    node = await start_node(tmp_path, connection_timeout=0.3)
    try:
        opener, silent = await node.device(), await node.device()

        async def never(_offer: PortOffer) -> bool:
            await asyncio.sleep(3600)
            return False

        silent.on_portopen = never
        tasks = [asyncio.ensure_future(opener.open_port(silent.address, n)) for n in range(5)]
        await wait_for(lambda: node.server.ports.pending(node.server.devices[silent.address])[1] == 5)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all("did not answer" in str(r) for r in results), results
        target_session = node.server.devices[silent.address]
        assert node.server.ports.pending(target_session) == (0, 0)
        await asyncio.gather(opener.close(), silent.close())
    finally:
        await node.stop()
