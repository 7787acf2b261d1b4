"""Ports between devices through the node (SPEC 4): open, refuse, relay, flags, close, backpressure."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from chrnode.device.client import DeviceClient, PortOffer
from chrnode.edge.hooks import DefaultHooks, NameRecord
from chrnode.edge.messages import encode_portsend_parts
from chrnode.errors import ChrError, NameError_, RequestRefused
from chrnode.testing.edge import EdgeNode, async_test, start_node, wait_for


async def _accepting(node: EdgeNode) -> DeviceClient:
    client = await node.device()

    async def accept(_offer: PortOffer) -> bool:
        return True

    client.on_portopen = accept
    return client


@async_test()
async def test_open_send_both_ways_and_close_from_the_opener(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        opener, target = await node.device(), await _accepting(node)
        offers: list[PortOffer] = []

        async def record(offer: PortOffer) -> bool:
            offers.append(offer)
            return True

        target.on_portopen = record
        port = await opener.open_port(target.address, "echo")
        remote = await target.accept()
        assert offers == [PortOffer(port.ref, opener.address, "echo", "rw")]
        assert remote.ref == port.ref and remote.peer == opener.address
        await port.write(b"ping")
        assert await remote.read() == b"ping"
        await remote.write(b"pong")
        assert await port.read() == b"pong"
        assert node.server.snapshot()["ports_open"] == 1
        await port.close()
        assert await remote.read() == b""  # the target sees the portclose
        await wait_for(lambda: node.server.snapshot()["ports_open"] == 0, what="port closed")
        await asyncio.gather(opener.close(), target.close())
    finally:
        await node.stop()


@async_test()
async def test_close_from_the_target_ends_the_openers_side(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        opener, target = await node.device(), await _accepting(node)
        port = await opener.open_port(target.address, 22)
        remote = await target.accept()
        await remote.write(b"last words")
        await remote.close()
        assert await port.read() == b"last words"
        assert await port.read() == b""
        with pytest.raises(ChrError):
            await port.write(b"too late")
        await asyncio.gather(opener.close(), target.close())
    finally:
        await node.stop()


@async_test()
async def test_refused_unknown_self_and_timeout(tmp_path: Path) -> None:
    node = await start_node(tmp_path, connection_timeout=0.5)
    try:
        opener, refusing = await node.device(), await node.device()  # no acceptor: refuses
        with pytest.raises(RequestRefused) as refused:
            await opener.open_port(refusing.address, 80)
        assert refused.value.code == "refused" and "not offered" in str(refused.value)
        with pytest.raises(RequestRefused) as missing:
            await opener.open_port(os.urandom(20), 80)
        assert missing.value.code == "not_found"
        with pytest.raises(RequestRefused) as itself:
            await opener.open_port(opener.address, 80)
        assert itself.value.code == "forbidden"
        silent = await node.device()
        never = asyncio.Event()

        async def hang(_offer: PortOffer) -> bool:
            await never.wait()
            return True

        silent.on_portopen = hang
        with pytest.raises(RequestRefused) as timeout:
            await opener.open_port(silent.address, 80)
        assert timeout.value.code == "timeout"
        assert node.server.snapshot()["ports_open"] == 0
        await asyncio.gather(opener.close(), refusing.close(), silent.close())
    finally:
        await node.stop()


class _Names(DefaultHooks):
    async def resolve_name(self, name: str) -> NameRecord | None:
        if "!" in name:
            raise NameError_(f"BNS name {name!r} has characters outside a-z 0-9 -")
        return self.names.get(name)


@async_test()
async def test_open_by_name_and_resolve(tmp_path: Path) -> None:
    hooks = _Names(epoch=1000)
    node = await start_node(tmp_path, hooks)
    try:
        opener, target = await node.device(), await _accepting(node)
        hooks.names["com:web"] = NameRecord((os.urandom(20), target.address), os.urandom(20), "com")
        port = await opener.open_port("com:web", 443)
        remote = await target.accept()
        await port.write(b"by name")
        assert await remote.read() == b"by name"
        for name, code in (("com:nobody", "not_found"), ("bad!name", "bad_name")):
            with pytest.raises(RequestRefused) as refused:
                await opener.open_port(name, 443)
            assert refused.value.code == code
        await asyncio.gather(opener.close(), target.close())
    finally:
        await node.stop()


@async_test()
async def test_flags_restrict_direction(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        opener, target = await node.device(), await _accepting(node)
        read_only = await opener.open_port(target.address, 1, "r")
        remote_ro = await target.accept()
        with pytest.raises(ChrError, match="may not write"):
            await read_only.write(b"no")
        header, data = encode_portsend_parts(read_only.ref, b"sneaky")
        opener.write_raw(header + data)  # bypass the client's own check: the node must drop it
        await wait_for(lambda: any(n.code == "forbidden" for n in opener.notifications), what="forbidden")
        await remote_ro.write(b"to the reader")
        assert await read_only.read() == b"to the reader"

        write_only = await opener.open_port(target.address, 2, "w")
        remote_wo = await target.accept()
        await write_only.write(b"to the target")
        assert await remote_wo.read() == b"to the target"
        header, data = encode_portsend_parts(write_only.ref, b"unwanted")
        target.write_raw(header + data)
        await wait_for(lambda: any(n.code == "forbidden" for n in target.notifications), what="forbidden")
        assert await opener.ping() > 0
        assert remote_ro.buffered == 0 and write_only.buffered == 0  # nothing got through
        await asyncio.gather(opener.close(), target.close())
    finally:
        await node.stop()


@async_test()
async def test_each_opener_of_a_shared_port_is_asked_and_gets_its_own_ref(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        first, second, target = await node.device(), await node.device(), await node.device()
        offers: list[PortOffer] = []

        async def record(offer: PortOffer) -> bool:
            offers.append(offer)
            return True

        target.on_portopen = record
        a = await first.open_port(target.address, "feed", "rs")
        remote_a = await target.accept()
        b = await second.open_port(target.address, "feed", "rs")
        remote_b = await target.accept()
        # the target accepted each subscriber itself and tells them apart by ref and opener
        assert a.ref != b.ref
        assert offers == [
            PortOffer(a.ref, first.address, "feed", "rs"),
            PortOffer(b.ref, second.address, "feed", "rs"),
        ]
        await remote_a.write(b"for a")
        await remote_b.write(b"for b")
        assert await a.read() == b"for a" and await b.read() == b"for b"
        await a.close()
        assert await remote_a.read() == b""
        await remote_b.write(b"more")
        assert await b.read() == b"more" and not remote_b.at_eof
        await b.close()
        assert await remote_b.read() == b""
        await wait_for(lambda: node.server.snapshot()["ports_open"] == 0, what="shared ports closed")
        await asyncio.gather(first.close(), second.close(), target.close())
    finally:
        await node.stop()


@async_test()
async def test_ports_close_when_a_device_leaves(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        opener, target = await node.device(), await _accepting(node)
        ports = [await opener.open_port(target.address, n) for n in range(3)]
        remotes = [await target.accept() for _ in ports]
        assert node.server.snapshot()["ports_open"] == 3
        await opener.close()
        for remote in remotes:
            assert await remote.read() == b""
        await wait_for(lambda: node.server.snapshot()["ports_open"] == 0, what="ports closed")
        assert await target.ping() > 0
        await target.close()
    finally:
        await node.stop()


@async_test()
async def test_slow_reader_gets_backpressure_not_unbounded_buffering(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        opener, target = await node.device(), await _accepting(node)
        port = await opener.open_port(target.address, 9)
        remote = await target.accept()
        data = os.urandom(1 << 20) * 40
        writer = asyncio.ensure_future(port.write(data))
        await asyncio.sleep(1.0)  # the target reads nothing meanwhile
        assert not writer.done(), "40 MiB were accepted while the reader read nothing"
        session = node.server.devices[target.address]
        assert session.conn is not None and session.conn.get_write_buffer_size() < 4 << 20
        digest = hashlib.sha256()
        received = 0
        while received < len(data):
            chunk = await remote.read()
            digest.update(chunk)
            received += len(chunk)
        await writer
        assert digest.digest() == hashlib.sha256(data).digest()
        await asyncio.gather(opener.close(), target.close())
    finally:
        await node.stop()


@pytest.mark.slow
@async_test(timeout=240)
async def test_two_devices_move_100_mb_with_equal_digests_and_usage(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        opener, target = await node.device(), await _accepting(node)
        port = await opener.open_port(target.address, 5)
        remote = await target.accept()
        block = os.urandom(1 << 20)
        sent, expected = 100 << 20, hashlib.sha256()

        async def send() -> None:
            for i in range(100):
                chunk = block[i:] + block[:i]
                expected.update(chunk)
                await port.write(chunk)

        async def receive() -> bytes:
            digest, got = hashlib.sha256(), 0
            while got < sent:
                chunk = await remote.read()
                assert chunk
                digest.update(chunk)
                got += len(chunk)
            return digest.digest()

        _, received = await asyncio.gather(send(), receive())
        assert received == expected.digest()
        assert node.server.usage_of(opener.address) > sent
        assert node.server.usage_of(target.address) > sent
        await asyncio.gather(opener.close(), target.close())
    finally:
        await node.stop()
