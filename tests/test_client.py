"""The device client: key files, publish/bind tunnels carrying HTTP, automatic tickets, compression."""

from __future__ import annotations

import asyncio
import http.server
import os
import stat
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chrnode.crypto import PrivateKey
from chrnode.device.client import DeviceKey
from chrnode.edge.hello import sign_hello
from chrnode.errors import CryptoError, RequestRefused
from chrnode.testing.edge import TEST_EPOCH, NodeThread, async_test, start_node, wait_for

BIG = os.urandom(1 << 20)


def test_device_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "device.key"
    created = DeviceKey.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert DeviceKey.load(path).address == created.address
    assert DeviceKey.load_or_create(path).address == created.address
    with pytest.raises(CryptoError, match="already exists"):
        DeviceKey.create(path)
    path.chmod(0o644)
    with pytest.raises(CryptoError, match="chmod 600"):
        DeviceKey.load(path)
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(CryptoError, match="malformed"):
        DeviceKey.load(path)
    with pytest.raises(CryptoError, match="does not exist"):
        DeviceKey.load(tmp_path / "missing.key")
    fresh = DeviceKey.load_or_create(tmp_path / "fresh.key")
    assert (tmp_path / "fresh.key").exists() and len(fresh.address) == 20


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = BIG if self.path == "/big" else f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[::-1])

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def http_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(5)


def _get(port: int, path: str, data: bytes | None = None) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=data, timeout=20) as response:
        body: bytes = response.read()
        return body


@async_test(timeout=90)
async def test_publish_and_bind_carry_http_end_to_end(tmp_path: Path, http_server: int) -> None:
    node = await start_node(tmp_path)
    try:
        server_side, client_side = await node.device(), await node.device()
        await server_side.publish("127.0.0.1", http_server, "web")
        local = await client_side.bind(0, server_side.address, "web")
        assert await asyncio.to_thread(_get, local, "/index.html") == b"hello from /index.html"
        assert await asyncio.to_thread(_get, local, "/big") == BIG
        assert await asyncio.to_thread(_get, local, "/echo", b"abc" * 1000) == (b"abc" * 1000)[::-1]
        # Each HTTP connection was its own port, and each ended with its TCP connection.
        assert node.server.snapshot()["ports_opened_total"] == 3
        await wait_for(lambda: node.server.snapshot()["ports_open"] == 0, what="tunnels closed")
        await asyncio.gather(server_side.close(), client_side.close())
    finally:
        await node.stop()


@async_test()
async def test_publish_with_dead_local_service_refuses(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        server_side, client_side = await node.device(), await node.device()
        with socket_port() as dead:
            await server_side.publish("127.0.0.1", dead, "db")
            with pytest.raises(RequestRefused) as refused:
                await client_side.open_port(server_side.address, "db")
        assert refused.value.code == "refused" and "local service" in str(refused.value)
        await asyncio.gather(server_side.close(), client_side.close())
    finally:
        await node.stop()


class socket_port:  # noqa: N801 - used as a context manager like a function
    """A port number nothing listens on (bound, not listening, during the block)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


@async_test()
async def test_automatic_tickets_keep_ahead_of_usage(tmp_path: Path) -> None:
    node = await start_node(tmp_path, ticket_grace_bytes=200_000, ticket_request_timeout=2.0)
    try:
        opener, target = await node.device(ticket_advance=100_000), await node.device()
        assert opener.tickets is not None

        async def accept(_offer: object) -> bool:
            return True

        target.on_portopen = accept
        port = await opener.open_port(target.address, 1)
        remote = await target.accept()
        for _ in range(4):
            await port.write(BIG)
            await remote.readexactly(len(BIG))
        await wait_for(
            lambda: (
                node.hooks.tickets[(opener.address, bytes(20), TEST_EPOCH)].total_bytes
                >= node.server.usage_of(opener.address)
            ),
            what="tickets covering usage",
        )
        assert opener.tickets.sent >= 3
        assert opener.is_open and target.is_open  # nobody was cut off for not paying
        await asyncio.gather(opener.close(), target.close())
    finally:
        await node.stop()


def test_compress_in_hello_compresses_answers_that_shrink(tmp_path: Path) -> None:
    thread = NodeThread(tmp_path)
    try:
        key = PrivateKey.generate()
        with thread.raw() as client:
            binding = client.sock.get_channel_binding("tls-unique")
            assert binding is not None
            signature = sign_hello(key, binding, thread.node.address)
            client.send(
                0x01,
                {"id": 1, "device": key.address, "device_sig": signature, "version": 2, "compress": True},
            )
            client.recv()
            client.send(0x09, {"id": 2, "name": "a" * 250})  # resolve: a long, repetitive not_found message
            header = client._read(8)
            flags, length = int.from_bytes(header[2:4], "big"), int.from_bytes(header[4:8], "big")
            assert flags == 0x0001 | 0x0002 | 0x0004 and length < 200
            client._read(length)
    finally:
        thread.stop()


@async_test()
async def test_client_with_compress_reads_compressed_answers(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        client = await node.device(compress=True)
        with pytest.raises(RequestRefused) as refused:
            await client.open_port("b" * 250, 1)
        assert refused.value.code == "not_found" and "b" * 250 in str(refused.value)
        await client.close()
    finally:
        await node.stop()
