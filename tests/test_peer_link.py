"""Peer links on real TLS sockets on loopback (SPEC 4): the hello both ways, requests and answers,
and what a peer that skips, forges or replays the hello gets."""

from __future__ import annotations

import asyncio
import functools
import ssl
from pathlib import Path
from typing import Any

import msgpack
import pytest

from chrnode.crypto import PrivateKey
from chrnode.edge.frame import encode_frame
from chrnode.edge.tlslisten import TlsListener, open_tls_connection, start_tls_server
from chrnode.identity import edge_client_context, edge_server_context, ensure_node_certificate
from chrnode.objects.kinds import NodeRecord, make_node_object
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm
from chrnode.peer.link import LinkConfig, PeerLink
from chrnode.peer.link_send import PeerError
from chrnode.testing.edge import async_test

NOW = 1_800_000_000
HOSTS: list[Host] = []


def peer_test(fn: Any) -> Any:
    """An async test whose hosts are shut down (listeners and links closed) when it ends."""

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> None:
        try:
            await fn(*args, **kwargs)
        finally:
            while HOSTS:
                await HOSTS.pop().shutdown()

    return async_test()(run)


class Host:
    """A minimal network server: answers PING and FIND_NODE, records links."""

    def __init__(self, key: PrivateKey, tmp: Path) -> None:
        self.loop = asyncio.get_running_loop()
        self.key = key
        rec = NodeRecord(key.address, "127.0.0.1", (41046,), 51055, 2, 31337)
        self.record = make_node_object(key, rec, seq=1, expires=NOW + 3600)
        self.up: list[PeerLink] = []
        self.down: list[PeerLink] = []
        self.requests: list[Any] = []
        directory = tmp / key.hex_address
        directory.mkdir()
        cert, pem = ensure_node_certificate(key, directory)
        self.server_ctx = edge_server_context(pem, cert)
        self.listener: TlsListener | None = None
        self.links: list[PeerLink] = []
        HOSTS.append(self)

    async def shutdown(self) -> None:
        if self.listener is not None:
            self.listener.close()
        for link in self.links:
            if link.conn is not None:
                link.conn.abort()
                await link.conn.wait_closed()

    def own_record(self) -> SignedObject:
        return self.record

    def link_up(self, link: PeerLink) -> None:
        self.up.append(link)

    def link_down(self, link: PeerLink) -> None:
        self.down.append(link)

    def relay_frame(self, link: PeerLink, ref: int, frame: bytearray | memoryview) -> None:
        self.requests.append(("relay", ref, bytes(frame)))

    def port_flow(self, link: PeerLink, ref: int, paused: bool) -> None:
        self.requests.append(("flow", ref, paused))

    def peer_request(self, link: PeerLink, msg: Any, request_id: int | None) -> None:
        self.requests.append(msg)
        if isinstance(msg, pm.PeerPing):
            link.answer(request_id, pm.PeerPingReply(123))
        elif isinstance(msg, pm.FindNode):
            link.answer(request_id, pm.Nodes((self.record,)))
        else:
            link.error(0x21, request_id, "not_found", "nothing here")

    def listen(self, config: LinkConfig) -> int:
        self.listener = start_tls_server(
            self.loop, self.server_ctx, "127.0.0.1", 0, lambda _addr: self._link(PeerLink(self, config)), 5.0
        )
        return self.listener.port

    def _link(self, link: PeerLink) -> PeerLink:
        self.links.append(link)
        return link

    async def dial(self, port: int, expected: bytes, config: LinkConfig) -> PeerLink:
        link = self._link(PeerLink(self, config, expected=expected))
        await open_tls_connection("127.0.0.1", port, edge_client_context(), link, 5.0)
        return await asyncio.wait_for(link.ready, 5.0)


A_KEY, B_KEY, C_KEY = (PrivateKey.from_bytes(bytes([i]) * 32) for i in (0x0A, 0x0B, 0x0C))
CFG = LinkConfig(hello_timeout=2.0, request_timeout=2.0)


async def wait(cond: Any, timeout: float = 5.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


@peer_test
async def test_hello_both_ways_then_requests_either_way(tmp_path: Path) -> None:
    a, b = Host(A_KEY, tmp_path), Host(B_KEY, tmp_path)
    port = b.listen(CFG)
    link = await a.dial(port, B_KEY.address, CFG)
    assert link.node == B_KEY.address and link.record == b.record
    await wait(lambda: len(b.up) == 1)
    back = b.up[0]
    assert back.node == A_KEY.address and back.record == a.record
    assert await link.ask(pm.PeerPing()) == pm.PeerPingReply(123)
    nodes = await back.ask(pm.FindNode(b"\x01" * 20))  # the listener asks the dialer
    assert nodes == pm.Nodes((a.record,))
    with pytest.raises(PeerError) as info:
        await link.ask(pm.Store(a.record))
    assert info.value.code == "not_found"
    link.close()
    await wait(lambda: len(b.down) == 1 and len(a.down) == 1)


@peer_test
async def test_dialling_the_wrong_node_fails_before_any_hello(tmp_path: Path) -> None:
    a, b = Host(A_KEY, tmp_path), Host(B_KEY, tmp_path)
    port = b.listen(CFG)
    with pytest.raises(PeerError, match="closed before the peer hello"):
        await a.dial(port, C_KEY.address, CFG)
    assert not b.up and not b.requests


async def raw_tls(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = edge_client_context()
    return await asyncio.open_connection("127.0.0.1", port, ssl=ctx)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, dict[str, Any]]:
    header = await asyncio.wait_for(reader.readexactly(8), 5.0)
    length = int.from_bytes(header[4:], "big")
    payload = await reader.readexactly(length)
    return header[1], int.from_bytes(header[2:4], "big"), msgpack.unpackb(payload, raw=False)


@peer_test
async def test_a_request_before_the_hello_gets_hello_required_and_the_link_closes(tmp_path: Path) -> None:
    b = Host(B_KEY, tmp_path)
    port = b.listen(CFG)
    reader, writer = await raw_tls(port)
    writer.write(encode_frame(pm.FIND_NODE, msgpack.packb({"id": 5, "target": b"\x01" * 20})))
    _, flags, payload = await read_frame(reader)
    assert flags == 3 and payload["code"] == "hello_required"
    assert await asyncio.wait_for(reader.read(), 5.0) == b""
    writer.close()
    assert not b.up and not b.requests


@peer_test
async def test_a_hello_replayed_from_another_session_is_refused(tmp_path: Path) -> None:
    b = Host(B_KEY, tmp_path)
    port = b.listen(CFG)
    reader, writer = await raw_tls(port)
    ssl_obj = writer.get_extra_info("ssl_object")
    assert isinstance(ssl_obj, ssl.SSLObject)
    from chrnode.peer.hello import make_peer_hello

    a_record = Host(A_KEY, tmp_path).record
    stale = make_peer_hello(A_KEY, b"\x00" * 12, B_KEY.address, a_record)  # not this session's binding
    msg_type, fields = pm.to_fields(stale)
    writer.write(encode_frame(msg_type, msgpack.packb({**fields, "id": 1}, use_bin_type=True)))
    _, flags, payload = await read_frame(reader)
    assert flags == 3 and payload["code"] == "wrong_device"
    assert await asyncio.wait_for(reader.read(), 5.0) == b""
    writer.close()
    assert not b.up


@peer_test
async def test_silence_after_tls_is_cut_at_the_hello_deadline(tmp_path: Path) -> None:
    b = Host(B_KEY, tmp_path)
    port = b.listen(LinkConfig(hello_timeout=0.3))
    reader, writer = await raw_tls(port)
    _, _, payload = await read_frame(reader)
    assert payload["code"] == "timeout"
    writer.close()


@peer_test
async def test_a_flood_gets_rate_limited_without_hurting_the_link(tmp_path: Path) -> None:
    a, b = Host(A_KEY, tmp_path), Host(B_KEY, tmp_path)
    port = b.listen(LinkConfig(requests_per_second=5, burst=5))
    link = await a.dial(port, B_KEY.address, CFG)
    results = await asyncio.gather(*(link.ask(pm.PeerPing()) for _ in range(12)), return_exceptions=True)
    limited = [r for r in results if isinstance(r, PeerError) and r.code == "rate_limited"]
    assert limited and len(limited) < 12
    await asyncio.sleep(0.5)
    assert await link.ask(pm.PeerPing()) == pm.PeerPingReply(123)


@peer_test
async def test_an_unanswered_request_times_out(tmp_path: Path) -> None:
    a = Host(A_KEY, tmp_path)
    b = Host(B_KEY, tmp_path)
    port = b.listen(CFG)
    link = await a.dial(port, B_KEY.address, CFG)
    b.peer_request = lambda link, msg, request_id: None  # type: ignore[method-assign]
    with pytest.raises(PeerError) as info:
        await link.ask(pm.PeerPing(), timeout=0.2)
    assert info.value.code == "timeout"
