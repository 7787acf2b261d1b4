"""Plain requests on the device port (SPEC 4): ping, getnode, getobject, resolve; idle timeout."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import msgpack
import pytest

from chrnode.crypto import keccak256, recover_address
from chrnode.edge.hooks import DefaultHooks, NameRecord
from chrnode.edge.messages import GetNode, GetNodeReply, GetObject, Resolve, ResolveReply
from chrnode.errors import RequestRefused
from chrnode.testing.edge import TEST_EPOCH, async_test, start_node


@async_test()
async def test_ping_getnode_getobject_resolve(tmp_path: Path) -> None:
    hooks = DefaultHooks(epoch=TEST_EPOCH)
    node = await start_node(tmp_path, hooks)
    try:
        client = await node.device()
        assert abs(await client.ping() - time.time() * 1000) < 60_000
        reply = await client.request(GetNode(node=node.address))
        assert isinstance(reply, GetNodeReply)
        record = dict(reply.record)
        signature = record.pop("signature")
        assert record["node"] == node.address and record["edge_ports"] == [node.port]
        packed = msgpack.packb(dict(sorted(record.items())), use_bin_type=True)
        assert recover_address(keccak256(packed), signature) == node.address
        for request in (GetNode(node=os.urandom(20)), GetObject(key=b"k" * 32)):
            with pytest.raises(RequestRefused) as missing:
                await client.request(request)
            assert missing.value.code == "not_found"
        owner, device = os.urandom(20), os.urandom(20)
        hooks.names["io:thing"] = NameRecord((device,), owner, "io")
        answer = await client.request(Resolve(name="io:thing"))
        assert answer == ResolveReply(device=device, owner=owner, namespace="io", id=answer.id)  # type: ignore[union-attr]
        with pytest.raises(RequestRefused) as unknown:
            await client.request(Resolve(name="io:other"))
        assert unknown.value.code == "not_found"
        await client.close()
    finally:
        await node.stop()


@async_test()
async def test_idle_connection_is_closed_after_idle_timeout(tmp_path: Path) -> None:
    node = await start_node(tmp_path, idle_timeout=0.4)
    try:
        idle, busy = await node.device(), await node.device()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            await busy.ping()
            await asyncio.sleep(0.1)
        await asyncio.wait_for(idle.wait_closed(), 10)
        assert any(n.code == "timeout" for n in idle.notifications)
        assert busy.is_open and await busy.ping() > 0
        await busy.close()
    finally:
        await node.stop()


@async_test()
async def test_stop_says_shutting_down_and_snapshot_counts(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    client = await node.device()
    await client.ping()
    snapshot = node.server.snapshot()
    assert snapshot["connections"] == 1 and snapshot["devices"] == 1
    assert snapshot["bytes_in"] > 0 and snapshot["bytes_out"] > 0 and snapshot["listening"] == [node.port]
    await node.stop()
    await asyncio.wait_for(client.wait_closed(), 10)
    assert client.closed_reason is not None and client.closed_reason.code == "shutting_down"
    assert node.hooks.reports and node.hooks.reports[-1]["connections"] == 0
    await node.stop()  # a second stop is harmless
