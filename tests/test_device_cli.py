"""`chr-node device` on a real node and chain: every refusal and close reason reaches its output,
with the code (docs/devices.md) and the node's message, and the exit status says it failed."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chrnode.chain.contracts import Fleet
from chrnode.device.key import DeviceKey
from chrnode.testing.anvil import DEPLOYER, DevChain, anvil_session, skip_or_fail_without_anvil
from chrnode.testing.devices import DeviceCli, edge_address, run_device
from chrnode.testing.node import NodeProcess

pytestmark = [pytest.mark.slow, pytest.mark.chain]

TICKET_TIMEOUT = 3  # seconds after hello to pay (short, so that the refusal comes quickly)


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    # Contracts deployed as on a real chain (device list closed), not as tools/devchain leaves
    # the dev fleet: a device must be allowed, so the refusal is the fleet's, not a test's stub.
    skip_or_fail_without_anvil()
    with anvil_session() as devchain:
        yield devchain


def chain_node(chain: DevChain, data_dir: Path, **env: str) -> NodeProcess:
    deployment = chain.deployment
    node = NodeProcess(
        data_dir,
        CHR_CHAIN_RPC=chain.rpc_url,
        CHR_BNS_CONTRACT=deployment.bns,
        CHR_FLEET_CONTRACT=deployment.fleet,
        CHR_CHAI_CONTRACT=deployment.chai,
        CHR_TICKET_REGISTRY_CONTRACT=deployment.ticket_registry,
        CHR_REQUIRE_TICKETS="true",
        CHR_TICKET_TIMEOUT=str(TICKET_TIMEOUT),
        **env,
    )
    from chrnode.identity import load_node_identity

    Fleet(chain.rpc, chain.address("fleet")).set_node_allowed(DEPLOYER, load_node_identity(data_dir).address)
    return node


@pytest.fixture(scope="module")
def world(chain: DevChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("device-cli")
    node = chain_node(chain, base / "data")
    keys = {name: DeviceKey.create(base / f"{name}.key") for name in ("a", "b", "c", "outsider")}
    fleet = Fleet(chain.rpc, chain.address("fleet"))
    fleet.set_devices_allowed(DEPLOYER, [keys[name].address for name in ("a", "b", "c")])
    node.start()
    try:
        yield {"node": node, "keys": keys, "base": base, "chain": chain}
    finally:
        node.stop()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def web() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(5)


def key(world: dict[str, Any], name: str) -> str:
    return str(world["keys"][name].path)


def address(world: dict[str, Any], name: str) -> str:
    return str(world["keys"][name].hex_address)


def publish(world: dict[str, Any], name: str, local_port: int, port: str = "web") -> DeviceCli:
    cli = DeviceCli.device(world["node"], "publish", "--key", key(world, name), "--port", port,
                    "--local", f"127.0.0.1:{local_port}")  # fmt: skip
    cli.wait_for("^publishing ")
    return cli


def fetch(local_port: int, path: str = "/") -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{local_port}{path}", timeout=20) as response:
        body: bytes = response.read()
        return body


def test_ping_of_a_device_the_fleet_refuses_prints_the_refusal_once(world: dict[str, Any]) -> None:
    done = run_device(world["node"], "ping", "--key", key(world, "outsider"))
    assert done.returncode == 1, done
    assert "ticket refused (fleet_denied_device)" in done.stdout
    # One refusal, with its code and the node's message; nothing about a closed connection
    # after the ping (the spurious second "ticket refused" line of issue 7).
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("chr-node device: ticket refused: fleet_denied_device: "), done.stderr
    assert world["keys"]["outsider"].hex_address.lower() in done.stderr.lower()


def test_ping_of_an_allowed_device_prints_no_ticket_error(world: dict[str, Any]) -> None:
    done = run_device(world["node"], "ping", "--key", key(world, "a"))
    assert done.returncode == 0, done
    assert "ticket accepted" in done.stdout and " ms" in done.stdout
    assert done.stderr == ""


def test_device_without_a_valid_ticket_is_told_ticket_required(world: dict[str, Any], web: int) -> None:
    cli = publish(world, "outsider", web)
    assert cli.wait_exit(TICKET_TIMEOUT + 30) == 1
    cli.wait_for(r"ticket refused: fleet_denied_device: \S", "stderr")
    last = cli.stderr.splitlines()[-1]
    assert last.startswith(
        "chr-node device: the node closed the connection: ticket_required: no valid ticket"
    )


def test_bind_to_a_device_that_is_not_connected_fails_at_once(world: dict[str, Any]) -> None:
    done = run_device(world["node"], "bind", "--key", key(world, "b"), "--device", address(world, "c"),
                      "--port", "web")  # fmt: skip
    assert done.returncode == 1, done
    assert done.stdout == ""
    line = f"chr-node device: cannot bind port 'web' of {address(world, 'c')}: not_found: "
    assert done.stderr.startswith(line) and "is not connected to this node" in done.stderr, done.stderr


def test_bind_to_a_port_not_published_or_whose_service_is_down_fails_at_once(
    world: dict[str, Any], web: int
) -> None:
    server = publish(world, "a", web)
    try:
        done = run_device(world["node"], "bind", "--key", key(world, "b"), "--device", address(world, "a"),
                          "--port", "other")  # fmt: skip
        assert done.returncode == 1, done
        line = f"chr-node device: cannot bind port 'other' of {address(world, 'a')}: refused: "
        assert done.stderr.startswith(line), done.stderr
        assert "does not publish it" in done.stderr
        server.wait_for("refused port 'other' to .*: port 'other' is not offered here", "stderr")
    finally:
        assert server.stop() == 0  # Ctrl-C
    with DeadPort() as dead:
        server = publish(world, "a", dead, "db")
        try:
            done = run_device(world["node"], "bind", "--key", key(world, "b"), "--device",
                              address(world, "a"), "--port", "db")  # fmt: skip
            assert done.returncode == 1, done
            assert "cannot bind port 'db'" in done.stderr and ": refused: " in done.stderr
            assert "local service for 'db' failed" in done.stderr
        finally:
            server.stop()


def test_bind_resets_local_connections_the_node_refuses_and_keeps_listening(
    world: dict[str, Any], web: int
) -> None:
    server = publish(world, "a", web)
    bind = DeviceCli.device(world["node"], "bind", "--key", key(world, "b"), "--device", address(world, "a"),
                     "--port", "web")  # fmt: skip
    try:
        local = int(bind.wait_for(r"^127\.0\.0\.1:(\d+) reaches port 'web'").group(1))
        assert fetch(local, "/one") == b"hello from /one"
        server.stop()
        # The publisher is gone: the local connection is reset (not an empty answer) and the
        # bind says why, then keeps listening for the next one.
        with pytest.raises(ConnectionResetError):
            fetch(local, "/two")
        bind.wait_for(
            rf"bind: reset the connection from 127\.0\.0\.1:\d+: port 'web' of {address(world, 'a')}: "
            "not_found: ",  # not connected, or left before answering (if the node was still closing it)
            "stderr",
        )
        assert bind.proc.poll() is None
        server = publish(world, "a", web)
        assert fetch(local, "/three") == b"hello from /three"
    finally:
        server.stop()
        assert bind.stop() == 0


def test_a_replaced_session_says_replaced(world: dict[str, Any], web: int) -> None:
    server = publish(world, "a", web)
    try:
        assert run_device(world["node"], "ping", "--key", key(world, "a")).returncode == 0
        assert server.wait_exit(30) == 1
        last = server.stderr.splitlines()[-1]
        assert last == (
            "chr-node device: the node closed the connection: replaced: "
            "a newer session of this device connected; this one is closed"
        )
    finally:
        server.stop()


def test_another_node_than_expected_is_refused(world: dict[str, Any]) -> None:
    other = "0x" + "11" * 20
    done = run_device(world["node"], "ping", "--key", key(world, "a"), "--expect", other)
    assert done.returncode == 1
    assert f"node at {edge_address(world['node'])} is 0x" in done.stderr
    assert f"expected {other}".lower() in done.stderr.lower()


def test_idle_timeout_busy_and_shutting_down_reach_the_device(
    world: dict[str, Any], web: int, tmp_path: Path
) -> None:
    node = chain_node(world["chain"], tmp_path / "data", CHR_MAX_CONNECTIONS="2", CHR_IDLE_TIMEOUT="2")
    node.start()
    servers: list[DeviceCli] = []

    def serve(name: str, keepalive: str) -> DeviceCli:
        server = DeviceCli.device(node, "publish", "--key", key(world, name), "--port", "web",
                                  "--local", f"127.0.0.1:{web}", "--keepalive", keepalive)  # fmt: skip
        servers.append(server)
        server.wait_for("^publishing ")
        return server

    try:
        # Publishing is waiting: without keep-alive pings the node closes the session as idle.
        kept, idle = serve("a", "0.5"), serve("b", "0")
        assert idle.wait_exit(30) == 1
        assert idle.stderr.splitlines()[-1] == (
            "chr-node device: the node closed the connection: timeout: no traffic for 2 s; closing"
        ), idle.stderr
        assert kept.proc.poll() is None  # connected before the idle one, and still up
        serve("c", "0.5")
        done = run_device(node, "ping", "--key", key(world, "b"))  # a third connection
        assert done.returncode == 1, done
        assert done.stderr.splitlines()[-1] == (
            "chr-node device: busy: this node is at its limit of 2 connections"
        ), done.stderr
    finally:
        node.stop()
        for server in servers:
            server.wait_exit(30)
    for server in servers[0], servers[2]:
        assert server.proc.returncode == 1
        assert server.stderr.splitlines()[-1].startswith(
            "chr-node device: the node closed the connection: shutting_down: the node is stopping"
        ), server.stderr


class DeadPort:
    """A loopback port nothing listens on (bound, not listening, during the block)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_allowed_devices_are_allowed(world: dict[str, Any]) -> None:
    # The refusals above are the fleet's: the same fleet allows a, b and c and not the outsider.
    fleet = Fleet(world["chain"].rpc, world["chain"].address("fleet"))
    keys = world["keys"]
    assert all(fleet.device_allowed(keys[name].address) for name in ("a", "b", "c"))
    assert not fleet.device_allowed(keys["outsider"].address)


def test_a_node_that_does_not_answer_is_reported_unavailable(world: dict[str, Any]) -> None:
    with DeadPort() as dead:
        done = run_device(world["node"], "ping", "--key", key(world, "a"), "--node", f"127.0.0.1:{dead}")
    assert done.returncode == 1, done
    line = f"chr-node device: unavailable: cannot connect to node at 127.0.0.1:{dead}: "
    assert done.stderr.startswith(line), done.stderr
