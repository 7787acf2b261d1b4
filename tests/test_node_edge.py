"""Devices through a real `chr-node start`: the EdgeV2 listener actor, TicketStore and SQLite."""

from __future__ import annotations

import asyncio
import http.server
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chrnode.crypto import parse_address
from chrnode.device.client import connect
from chrnode.device.key import DeviceKey
from chrnode.testing.crypto import signed_ticket
from chrnode.testing.node import NodeProcess

pytestmark = pytest.mark.slow


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from behind device A"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def stored_tickets(data_dir: Path) -> dict[bytes, int]:
    db = sqlite3.connect(f"file:{data_dir / 'chr-node.sqlite'}?mode=ro", uri=True)
    try:
        return {
            bytes(device): total for device, total in db.execute("SELECT device, total_bytes FROM tickets")
        }
    finally:
        db.close()


def test_http_through_two_devices_and_tickets_persist_across_restart(
    tmp_path: Path, web_server: int, nodes: list[NodeProcess]
) -> None:
    node = NodeProcess(tmp_path / "data", CHR_REQUIRE_TICKETS="true")
    nodes.append(node)
    node.start()
    info = node.rpc("chr_node_info")
    node_address = parse_address(info["address"])
    edge_port = info["ports"]["edge2"][0]
    key_a = DeviceKey.create(tmp_path / "a.key")
    key_b = DeviceKey.create(tmp_path / "b.key")

    async def relay() -> bytes:
        a = await connect("127.0.0.1", edge_port, key_a, expect_node=node_address)
        b = await connect("127.0.0.1", info["ports"]["edge2"][1], key_b, expect_node=node_address)
        try:
            await a.publish("127.0.0.1", web_server, "web")
            local = await b.bind(0, key_a.address, "web")

            def fetch() -> bytes:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=20) as response:
                    return bytes(response.read())

            body = await asyncio.get_running_loop().run_in_executor(None, fetch)
            assert await a.ping() >= 0
            return body
        finally:
            await a.close()
            await b.close()

    try:
        assert asyncio.run(relay()) == b"hello from behind device A"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not {key_a.address, key_b.address} <= set(
            stored_tickets(node.data_dir)
        ):
            time.sleep(0.1)
        tickets = stored_tickets(node.data_dir)
        assert tickets[key_a.address] > 0 and tickets[key_b.address] > 0, "both devices paid for the relay"
    finally:
        assert node.stop() == 0

    node = NodeProcess(tmp_path / "data", CHR_REQUIRE_TICKETS="true")  # same data dir, same key
    nodes.append(node)
    node.start()

    async def lower_ticket() -> object:
        info2 = node.rpc("chr_node_info")
        a = await connect(
            "127.0.0.1", info2["ports"]["edge2"][0], key_a, expect_node=node_address, auto_tickets=False
        )
        try:
            stale = signed_ticket(
                key_a.private_key, node_address, epoch=a.epoch, fleet=a.fleet, total_bytes=1
            )
            return await a.send_ticket(stale)
        finally:
            await a.close()

    try:
        reply = asyncio.run(lower_ticket())
        assert getattr(reply, "status", None) == "too_low", reply
        assert reply.latest.total_bytes == tickets[key_a.address]  # type: ignore[attr-defined]
    finally:
        assert node.stop() == 0
    assert node.leftovers() == []


def test_device_cli_keygen_and_ping(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    import subprocess
    import sys

    node = NodeProcess(tmp_path / "data")
    nodes.append(node)
    node.start()
    info = node.rpc("chr_node_info")
    key = tmp_path / "dev.key"
    cli = [sys.executable, "-m", "chrnode.cli", "device"]
    made = subprocess.run(
        [*cli, "keygen", "--key", str(key)], env=node.env, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0 and made.stdout.startswith("device 0x"), made.stderr
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    target = f"127.0.0.1:{info['ports']['edge2'][0]}"
    pinged = subprocess.run(
        [*cli, "ping", "--key", str(key), "--node", target, "--expect", info["address"]],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        pinged.returncode == 0 and "ping" in pinged.stdout and info["address"][2:10] in pinged.stdout.lower()
    )
    wrong = subprocess.run(
        [*cli, "ping", "--key", str(key), "--node", target, "--expect", "0x" + "11" * 20],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 1 and "expected 0x1111" in wrong.stderr  # a refusal; 2 is bad input
    assert node.stop() == 0


def test_openssl_s_client_on_the_nodes_edge_port(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    """SPEC 3 as an outside client sees it: TLS 1.2, ECDHE on secp256k1, the node's address in the cert."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.fail("the openssl binary is needed (apt-get install openssl; .ci/run installs it)")
    node = NodeProcess(tmp_path / "data")
    nodes.append(node)
    node.start()
    info = node.rpc("chr_node_info")
    target = f"127.0.0.1:{info['ports']['edge2'][0]}"
    result = subprocess.run(
        ["openssl", "s_client", "-connect", target, "-tls1_2", "-groups", "secp256k1", "-showcerts"],
        input=b"",
        capture_output=True,
        timeout=60,
        check=False,
    )
    out = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert "TLSv1.2" in out and "Server Temp Key: ECDH, secp256k1" in out, out
    assert info["address"][2:].lower() in out.lower(), "the certificate names the node's address"
    no_13 = subprocess.run(
        ["openssl", "s_client", "-connect", target, "-tls1_3"],
        input=b"",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert no_13.returncode != 0, "TLS 1.3 is not offered on the device port (SPEC 3)"
    assert node.stop() == 0
