"""The seam of issue 10 item 0 on real TLS sockets: random 63-bit refs and ref_in_use (SPEC 4),
per-port backpressure (a slow reader pauses only its own port at the source, never the source's
connection), an asynchronous device lookup through a resolver, and one network server hosting the
edge listeners and outbound links."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from pathlib import Path

import pytest

from chrnode.crypto import PrivateKey
from chrnode.device.client import DeviceClient, PortOffer
from chrnode.edge import codes
from chrnode.edge.flow import PAUSE_ALLOWANCE
from chrnode.edge.messages import PORT_PAUSE, PORT_RESUME
from chrnode.edge.ports import REF_BITS, PortEnd
from chrnode.edge.server import EdgeServer
from chrnode.edge.tlsconn import TlsConnection
from chrnode.errors import RequestRefused
from chrnode.identity import edge_client_context, edge_server_context, load_node_identity
from chrnode.net.server import NetworkServer
from chrnode.testing.edge import EdgeNode, NodeThread, async_test, node_config, start_node, wait_for

PORTOPEN, PORTSEND = 0x03, 0x04
RESPONSE, ERROR = 0x0001, 0x0002


async def _accepting(node: EdgeNode) -> DeviceClient:
    client = await node.device()

    async def accept(_offer: PortOffer) -> bool:
        return True

    client.on_portopen = accept
    return client


# ---- refs (SPEC 4) -------------------------------------------------------------------------------


@async_test()
async def test_refs_are_random_positive_63_bit_integers(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        opener, target = await node.device(), await _accepting(node)
        refs = [(await opener.open_port(target.address, n)).ref for n in range(8)]
        assert all(0 < ref < 1 << REF_BITS for ref in refs)
        assert len(set(refs)) == 8
        # sequential refs would all be below 2^32; eight random ones all are with odds 2^-248
        assert max(refs) >= 1 << 32
        await asyncio.gather(opener.close(), target.close())
    finally:
        await node.stop()


def test_a_target_answering_ref_in_use_is_asked_again_with_another_ref(tmp_path: Path) -> None:
    thread = NodeThread(tmp_path, conn_rate_per_ip=10_000.0)
    try:
        target, opener = thread.raw(), thread.raw()
        key = PrivateKey.generate()
        target.hello(key, thread.node.address)
        opener.hello(PrivateKey.generate(), thread.node.address)
        opener.send(PORTOPEN, {"id": 5, "device": key.address, "port": 7})
        seen = []
        for answer in ("ref_in_use", "ref_in_use", None):
            msg_type, flags, request = target.recv()
            assert (msg_type, flags) == (PORTOPEN, 0)
            seen.append(request["ref"])
            if answer is None:
                target.send(PORTOPEN, {"id": request["id"]}, flags=RESPONSE)
            else:
                error = {"id": request["id"], "code": answer, "message": "I use that ref"}
                target.send(PORTOPEN, error, flags=RESPONSE | ERROR)
        assert len(set(seen)) == 3
        msg_type, flags, reply = opener.recv()
        assert (msg_type, flags, reply) == (PORTOPEN, RESPONSE, {"id": 5, "ref": seen[-1]})
        assert thread.run(lambda: thread.node.server.snapshot()["ports_open"]) == 1
    finally:
        thread.stop()


# ---- per-port backpressure -----------------------------------------------------------------------


@pytest.mark.slow
@async_test(timeout=120)
async def test_a_slow_reader_pauses_only_its_own_port_at_the_source(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        source, slow, fast = await node.device(), await _accepting(node), await _accepting(node)
        to_slow = await source.open_port(slow.address, "slow")
        slow_end = await slow.accept()
        to_fast = await source.open_port(fast.address, "fast")
        fast_end = await fast.accept()
        big = os.urandom(1 << 20) * 24
        stalled = asyncio.ensure_future(to_slow.write(big))  # the slow device reads nothing yet
        session = node.server.devices[source.address]
        await wait_for(
            lambda: to_slow.ref in session.paused_refs(), what="the slow port paused at its source"
        )
        # the device client honours port_pause once the frame reaches it
        await wait_for(lambda: not to_slow._sendable.is_set(), what="the client holding the port")
        # the source's other port flows at full speed meanwhile, and its connection is never paused
        data = os.urandom(1 << 20) * 16
        writer = asyncio.ensure_future(to_fast.write(data))
        digest, got = hashlib.sha256(), 0
        while got < len(data):
            chunk = await fast_end.read()
            digest.update(chunk)
            got += len(chunk)
        await asyncio.wait_for(writer, 30)
        assert digest.digest() == hashlib.sha256(data).digest()
        assert session._pauses == 0 and session.conn is not None and session.conn.is_reading()
        assert not stalled.done()
        slow_session = node.server.devices[slow.address]
        assert slow_session.conn is not None and slow_session.conn.get_write_buffer_size() < 8 << 20
        # the slow reader catches up: the port resumes and every byte arrives intact
        digest, got = hashlib.sha256(), 0
        while got < len(big):
            chunk = await slow_end.read()
            digest.update(chunk)
            got += len(chunk)
        await asyncio.wait_for(stalled, 30)
        assert digest.digest() == hashlib.sha256(big).digest()
        await wait_for(lambda: not session.paused_refs(), what="the port resumed")
        await asyncio.gather(source.close(), slow.close(), fast.close())
    finally:
        await node.stop()


def test_a_device_that_ignores_port_pause_is_paused_as_a_whole(tmp_path: Path) -> None:
    thread = NodeThread(tmp_path, conn_rate_per_ip=10_000.0, frame_rate_per_device=100_000.0)
    try:
        target, source = thread.raw(), thread.raw()
        key = PrivateKey.generate()
        target.hello(key, thread.node.address)
        source.hello(PrivateKey.generate(), thread.node.address)
        source.send(PORTOPEN, {"id": 1, "device": key.address, "port": 1})
        _type, _flags, request = target.recv()
        target.send(PORTOPEN, {"id": request["id"]}, flags=RESPONSE)
        ref = source.recv()[2]["ref"]
        # the target reads nothing more; the source sends regardless of port_pause
        frame = bytes([2, PORTSEND, 0, 0])
        payload = b"\x82\xa3ref\xcf" + ref.to_bytes(8, "big") + b"\xa4data\xc6" + (1 << 16).to_bytes(4, "big")
        chunk = os.urandom(1 << 16)
        whole = frame + (len(payload) + len(chunk)).to_bytes(4, "big") + payload + chunk
        source.sock.settimeout(0.5)
        sent = 0
        try:
            while sent < 200 << 20:
                source.sock.sendall(whole)
                sent += len(chunk)
        except (TimeoutError, ssl.SSLError, OSError):
            pass  # the node stopped reading this connection: its TCP window filled
        assert sent < 100 << 20, "the node kept reading a device that ignores port_pause"

        def state() -> tuple[int, int, int]:
            session = next(s for s in thread.node.server.sessions if s.device == key.address)
            src = next(s for s in thread.node.server.sessions if s.device not in (key.address, None))
            assert session.conn is not None
            return src._pauses, session.conn.get_write_buffer_size(), len(src.paused_refs())

        pauses, queued, held = thread.run(state)
        assert pauses >= 1 and held == 1
        assert queued < HARD_LIMIT_MARGIN
        source.sock.settimeout(5.0)
        types = set()
        try:
            for _ in range(20):
                types.add(source.recv()[0])
        except (TimeoutError, ssl.SSLError, OSError):
            pass
        assert PORT_PAUSE in types and PORT_RESUME not in types
    finally:
        thread.stop()


HARD_LIMIT_MARGIN = 2 * PAUSE_ALLOWANCE + (4 << 20)  # the allowance plus what TLS and TCP hold in flight


# ---- finding a device (asynchronous) -------------------------------------------------------------


class WaitingResolver:
    """A resolver that answers once the test opens its ``gate`` (what a DHT lookup that takes a
    while looks like to the port table), with the device's end if it is connected by then; it
    waits at most ``patience`` seconds."""

    def __init__(self, node: EdgeNode, patience: float) -> None:
        self.node = node
        self.patience = patience
        self.gate = asyncio.Event()
        self.asked: list[bytes] = []

    async def find(self, device: bytes) -> PortEnd | None:
        self.asked.append(device)
        try:
            await asyncio.wait_for(self.gate.wait(), self.patience)
        except TimeoutError:
            return None
        return self.node.server.devices.get(device)


@async_test()
async def test_a_device_not_here_is_looked_up_asynchronously(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        resolver = WaitingResolver(node, patience=5.0)
        node.server.resolver = resolver
        opener = await node.device()
        later = PrivateKey.generate()
        opening = asyncio.ensure_future(opener.open_port(later.address, "svc"))
        await wait_for(lambda: resolver.asked == [later.address], what="the resolver asked")
        assert await opener.ping() > 0  # the lookup does not hold the session
        target = await node.device(later)

        async def accept(_offer: PortOffer) -> bool:
            return True

        target.on_portopen = accept
        resolver.gate.set()
        port = await asyncio.wait_for(opening, 10)
        remote = await target.accept()
        await port.write(b"found you")
        assert await remote.read() == b"found you"
        # a device nobody finds: not_found once the resolver gives up
        resolver.patience = 0.2
        resolver.gate.clear()
        with pytest.raises(RequestRefused) as missing:
            await opener.open_port(PrivateKey.generate().address, "svc")
        assert missing.value.code == codes.NOT_FOUND
        await asyncio.gather(opener.close(), target.close())
    finally:
        await node.stop()


@async_test()
async def test_without_a_resolver_an_absent_device_is_not_found_at_once(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        opener = await node.device()
        with pytest.raises(RequestRefused) as missing:
            await opener.open_port(PrivateKey.generate().address, 1)
        assert missing.value.code == codes.NOT_FOUND
        await opener.close()
    finally:
        await node.stop()


# ---- the network server --------------------------------------------------------------------------


class _Recorder:
    """A TlsProtocol that keeps what it reads (an outbound link's protocol for the test)."""

    def __init__(self) -> None:
        self.buffer = bytearray(65536)
        self.data = bytearray()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, conn: TlsConnection) -> None:
        self.conn = conn

    def get_buffer(self) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buffer[:nbytes]

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        return None

    def resume_writing(self) -> None:
        return None


@async_test()
async def test_one_network_server_hosts_the_edge_listeners_and_outbound_links(tmp_path: Path) -> None:
    network = NetworkServer()
    await network.start()
    first = await start_node(tmp_path / "a")  # a node to link to
    try:
        identity = load_node_identity(tmp_path / "b")
        context = edge_server_context(identity.key_pem_path, identity.cert_path)
        edge = EdgeServer(node_config(), identity.key, context, network=network)
        ports = await edge.start()
        assert [listener.port for listener in network.listeners("edge2")] == ports
        assert edge.loop is network.loop
        recorder = _Recorder()
        conn = await network.connect("peer", first.host, first.port, edge_client_context(), recorder)
        assert network.links("peer") == [conn]
        await edge.stop()  # the edge's listeners close; the network's links stay
        assert network.listeners("edge2") == [] and network.links("peer") == [conn]
        await network.stop()
        await asyncio.wait_for(recorder.lost, 5)
        assert network.links("peer") == []
    finally:
        await network.stop()
        await first.stop()
