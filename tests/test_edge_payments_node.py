"""Payments belong to the payer (issue 8 item 4, SPEC 5 step 6), on a real node over a real anvil:
device T presenting device V's payment transaction in its own ticket is refused with
`payment_wrong_payer`, and V's own ticket with it is then accepted."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chrnode.chain.contracts import Fleet
from chrnode.crypto import parse_address
from chrnode.device.client import DeviceClient, connect
from chrnode.device.key import DeviceKey
from chrnode.edge.messages import TicketMsg, TicketReply
from chrnode.errors import RequestRefused
from chrnode.testing.anvil import DEPLOYER, DevChain
from chrnode.testing.chain import ChainWorld
from chrnode.testing.node import NodeProcess, node_env
from chrnode.ticket import Ticket

pytestmark = [pytest.mark.slow, pytest.mark.chain]
PRICE = 2
BYTES = 1 << 20


@pytest.fixture
def paid_node(
    chain: DevChain, nodes: list[NodeProcess], tmp_path: Path
) -> Iterator[tuple[NodeProcess, bytes, ChainWorld]]:
    world = ChainWorld.build(chain, price_per_byte=PRICE, requires_payment=True)
    deployment = chain.deployment
    data = tmp_path / "data"
    env = node_env(
        data,
        CHR_CHAIN_RPC=chain.rpc_url,
        CHR_CHAIN_ID=str(chain.anvil.chain_id),
        CHR_BNS_CONTRACT=deployment.bns,
        CHR_FLEET_CONTRACT=deployment.fleet,
        CHR_CHAI_CONTRACT=deployment.chai,
        CHR_TICKET_REGISTRY_CONTRACT=deployment.ticket_registry,
    )
    node_hex = subprocess.run(
        [sys.executable, "-m", "chrnode.cli", "init", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    Fleet(chain.rpc, world.fleet_address).set_node_allowed(DEPLOYER, parse_address(node_hex))
    node = NodeProcess(data)
    node.env = env
    node.rpc_port = int(env["CHR_RPC_PORT"])
    nodes.append(node)
    node.start()
    try:
        yield node, parse_address(node_hex), world
    finally:
        node.stop()


def _ticket(client: DeviceClient, proof: bytes) -> Ticket:
    agent = client.tickets
    assert agent is not None
    ticket = Ticket(
        chain_id=client.chain_id,
        epoch=agent.epoch,
        node=client.node,
        fleet=agent.fleet,
        total_connections=1,
        total_bytes=BYTES,
        payment_proof=proof,
    )
    return ticket.sign(client.key)


def test_another_devices_payment_is_refused_and_the_payer_keeps_it(
    paid_node: tuple[NodeProcess, bytes, ChainWorld], chain: DevChain, tmp_path: Path
) -> None:
    node, address, world = paid_node
    port = int(node.rpc("chr_node_info")["ports"]["edge2"][0])
    fleet = Fleet(chain.rpc, chain.address("fleet"))
    payer, taker = DeviceKey.create(tmp_path / "v.key"), DeviceKey.create(tmp_path / "t.key")
    for device in (payer, taker):
        fleet.set_device_allowed(DEPLOYER, device.address)
    tx = world.pay(chain.address("fleet"), PRICE * BYTES, payer=payer.address)

    async def run() -> tuple[str, str, TicketReply]:
        thief = await connect("127.0.0.1", port, taker, expect_node=address, auto_tickets=False)
        try:
            with pytest.raises(RequestRefused) as refused:
                await thief.request(TicketMsg(ticket=_ticket(thief, tx)))
            code, message = refused.value.code, str(refused.value)
        finally:
            await thief.close()
        owner = await connect("127.0.0.1", port, payer, expect_node=address, auto_tickets=False)
        try:
            reply = await owner.request(TicketMsg(ticket=_ticket(owner, tx)))
        finally:
            await owner.close()
        assert isinstance(reply, TicketReply)
        return code, message, reply

    code, message, reply = asyncio.run(run())
    assert code == "payment_wrong_payer", message
    assert payer.address.hex() in message.lower()
    assert (reply.status, reply.paid_bytes) == ("thanks", BYTES)
