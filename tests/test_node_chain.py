"""A real node on a real anvil: names, fleet rules and proxied reads through the node (SPEC 5, 7)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chrnode.chain.contracts import Bns, Fleet
from chrnode.crypto import parse_address
from chrnode.device.client import connect
from chrnode.device.key import DeviceKey
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


def _wait(check: Any, seconds: float, what: str) -> float:
    """Poll `check` (async, truthy when done) until it holds; return the seconds it took."""

    async def run() -> float:
        started = time.monotonic()
        while not await check():
            if time.monotonic() - started > seconds:
                raise AssertionError(f"{what}: not within {seconds} s")
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    return asyncio.run(run())


def test_allow_revoke_and_open_on_chain_take_effect_within_seconds(
    world: dict[str, Any], chain: DevChain, tmp_path: Path
) -> None:
    """The node watches the Fleet events (RemoteChain.Monitor) and drops its cached decisions."""
    node, address = world["node"], world["address"]
    port = edge_port(node)
    fleet = Fleet(chain.rpc, chain.address("fleet"))
    newcomer = DeviceKey.create(tmp_path / "newcomer.key")
    device_hex = "0x" + newcomer.address.hex()

    async def accepted() -> bool:
        client = await connect("127.0.0.1", port, newcomer, expect_node=address, auto_tickets=False)
        try:
            reply = await client.tickets.send(minimum=client.tickets.paid + 1)
            error = client.tickets.last_error
            if reply is None:
                assert getattr(error, "code", None) == "fleet_denied_device", error
                # The refusal tells the device what to do (issue 7).
                assert f"chr-node fleet allow {device_hex}" in str(error)
            return reply is not None
        finally:
            await client.close()

    async def refused() -> bool:
        return not await accepted()

    assert asyncio.run(refused())  # cached now: denied for the contracts TTL (5 min) without the watch
    fleet.set_device_allowed(DEPLOYER, newcomer.address, True)
    assert _wait(accepted, 15, "an allowed device gets in") < 15
    fleet.set_device_allowed(DEPLOYER, newcomer.address, False)
    assert _wait(refused, 15, "a revoked device is refused") < 15
    fleet.set_devices_open(DEPLOYER, True)
    try:
        assert _wait(accepted, 15, "an open fleet admits any device") < 15
    finally:
        fleet.set_devices_open(DEPLOYER, False)
    assert _wait(refused, 15, "a closed fleet refuses it again") < 15


def test_a_moved_name_resolves_anew_within_seconds(world: dict[str, Any], chain: DevChain) -> None:
    node, allowed, visitor = world["node"], world["allowed"], world["visitor"]
    helper = ChainWorld.build(chain)
    helper.register("net:moving", (allowed.address,))
    assert node.rpc("bns_resolve", ["moving.chronara.net"])["devices"] == ["0x" + allowed.address.hex()]
    bns = Bns(chain.rpc, chain.address("bns"))
    bns.update(DEPLOYER, "net:moving", [visitor.address], chain.block_timestamp() + 86400)
    moved = ["0x" + visitor.address.hex()]

    async def resolved() -> bool:
        return bool(node.rpc("bns_resolve", ["moving.chronara.net"])["devices"] == moved)

    assert _wait(resolved, 15, "a moved name resolves to its new device") < 15
