"""A real node on a real anvil: names, fleet rules and proxied reads through the node (SPEC 5, 7)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chrnode.chain.contracts import Fleet
from chrnode.client import connect
from chrnode.client_key import DeviceKey
from chrnode.crypto import parse_address
from chrnode.edge.messages import Resolve, ResolveReply
from chrnode.testing.anvil import DEPLOYER, DevChain, anvil_session, skip_or_fail_without_anvil
from chrnode.testing.chain import ChainWorld
from chrnode.testing.node import NodeProcess, node_env

pytestmark = [pytest.mark.slow, pytest.mark.chain]


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    skip_or_fail_without_anvil()
    with anvil_session() as devchain:
        yield devchain


@pytest.fixture(scope="module")
def world(chain: DevChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("chain-node")
    data = base / "data"
    deployment = chain.deployment
    env = node_env(
        data,
        CHR_CHAIN_RPC=chain.rpc_url,
        CHR_CHAIN_ID=str(chain.anvil.chain_id),
        CHR_BNS_CONTRACT=deployment.bns,
        CHR_FLEET_CONTRACT=deployment.fleet,
        CHR_CHAI_CONTRACT=deployment.chai,
        CHR_TICKET_REGISTRY_CONTRACT=deployment.ticket_registry,
        CHR_REQUIRE_TICKETS="true",
    )
    node_hex = subprocess.run(
        [sys.executable, "-m", "chrnode.cli", "init", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    fleet = Fleet(chain.rpc, chain.address("fleet"))
    fleet.set_node_allowed(DEPLOYER, parse_address(node_hex))
    allowed, outsider = DeviceKey.create(base / "allowed.key"), DeviceKey.create(base / "outsider.key")
    visitor = DeviceKey.create(base / "visitor.key")
    fleet.set_device_allowed(DEPLOYER, allowed.address)
    fleet.set_device_allowed(DEPLOYER, visitor.address)
    helper = ChainWorld.build(chain)
    for namespace in ("com:mysite", "ai:robot", "org:club"):
        helper.register(namespace, (allowed.address,))
    node = NodeProcess(data)
    node.env = env
    node.start()
    try:
        yield {
            "node": node,
            "allowed": allowed,
            "outsider": outsider,
            "visitor": visitor,
            "address": parse_address(node_hex),
        }
    finally:
        node.stop()


def edge_port(node: NodeProcess) -> int:
    return int(node.rpc("chr_node_info")["ports"]["edge2"][0])


def test_names_in_several_tlds_resolve_through_the_node(world: dict[str, Any]) -> None:
    node, allowed = world["node"], world["allowed"]
    for name, namespace in (
        ("mysite.chronara.com", "com:mysite"),
        ("robot.chronara.ai", "ai:robot"),
        ("club.chronara.org", "org:club"),
    ):
        found = node.rpc("bns_resolve", [name])
        assert found["found"] and found["namespace"] == namespace
        assert found["devices"] == ["0x" + allowed.address.hex()]
    missing = node.rpc("bns_resolve", ["nobody.chronara.net"])
    assert not missing["found"]
    for bad in ("mysite.chronara.xyz", "bad..name", "-x.chronara.com"):
        _, reply = node.post(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "bns_resolve", "params": [bad]})
        )
        assert reply["error"]["code"] == -32602, reply


def test_proxied_reads_and_fleet_status(world: dict[str, Any], chain: DevChain) -> None:
    node = world["node"]
    assert int(node.rpc("eth_chainId"), 16) == chain.anvil.chain_id
    assert int(node.rpc("eth_blockNumber"), 16) >= 1
    code = node.rpc("eth_getCode", ["0x" + chain.address("fleet").hex()])
    assert len(code) > 10
    deadline = time.monotonic() + 30
    status = node.rpc("fleet_status")
    while "contract" not in status and time.monotonic() < deadline:  # published every few seconds
        time.sleep(0.2)
        status = node.rpc("fleet_status")
    assert status["contract"]["ok"], status
    jobs = {job["name"]: job for job in node.rpc("cron_jobs")["jobs"]}
    assert jobs["ticket_submit"]["target"] == "RemoteChain.RPC"  # best tickets go to the registry


def test_fleet_allowlist_and_resolve_on_the_edge_port(world: dict[str, Any]) -> None:
    node, allowed, outsider, address = world["node"], world["allowed"], world["outsider"], world["address"]
    port = edge_port(node)

    async def run() -> tuple[Any, str]:
        inside = await connect(
            "127.0.0.1", port, allowed, expect_node=address
        )  # its first ticket is accepted
        try:
            reply = await inside.request(Resolve(name="mysite.chronara.com"))
            outside = await connect("127.0.0.1", port, outsider, expect_node=address, auto_tickets=False)
            try:
                assert await outside.tickets.send() is None  # refused: the agent keeps the error
                error = outside.tickets.last_error
                refused = getattr(error, "code", str(error))
            finally:
                await outside.close()
            return reply, refused
        finally:
            await inside.close()

    started = time.monotonic()
    reply, refused = asyncio.run(run())
    assert isinstance(reply, ResolveReply) and reply.device == allowed.address
    assert refused == "fleet_denied_device"
    assert time.monotonic() - started < 60


def test_portopen_by_name_reaches_the_named_device(world: dict[str, Any]) -> None:
    node, allowed, visitor, address = world["node"], world["allowed"], world["visitor"], world["address"]
    port = edge_port(node)

    async def run() -> bytes:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        local = server.sockets[0].getsockname()[1]
        owner = await connect("127.0.0.1", port, allowed, expect_node=address)
        guest = await connect("127.0.0.1", port, visitor, expect_node=address)
        try:
            await owner.publish("127.0.0.1", local, "echo")
            tunnel = await guest.open_port("robot.chronara.ai", "echo")
            await tunnel.write(b"ping by name")
            answer = await tunnel.readexactly(len(b"ping by name"))
            await tunnel.close()
            return answer
        finally:
            await guest.close()
            await owner.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(run()) == b"ping by name"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
