#!/usr/bin/env python3
"""How soon a running node acts on a fleet or name change on chain (issue 7), in one run:

- baseline: how soon a direct `eth_call` (Fleet.deviceAllowed, BnsRegistry.resolve) sees the
  change after its transaction is mined (what the chain itself says), and the bound without the
  event watch: the "contracts" cache TTL (300 s, SPEC 7);
- the node (a real `chr-node start` on anvil, tickets required): seconds from the mined
  transaction until its answer follows it, for allow (a device's ticket is accepted), revoke
  (refused) and a moved BNS name (`bns_resolve` answers the new device), over several rounds.

    .venv/bin/python bench/bench_invalidation.py [--rounds 5]

Needs `npm ci` (anvil). Prints the median and range of each; nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.chain.cache_policy import CATEGORIES
from chrnode.chain.contracts import Bns, Fleet
from chrnode.crypto import parse_address
from chrnode.device.client import connect
from chrnode.device.key import DeviceKey
from chrnode.testing.anvil import DEPLOYER, anvil_session
from chrnode.testing.node import NodeProcess, node_env

POLL = 0.05


def seconds_until(check: Callable[[], Awaitable[bool]], limit: float = 60.0) -> float:
    async def run() -> float:
        started = time.perf_counter()
        while not await check():
            if time.perf_counter() - started > limit:
                return float("inf")
            await asyncio.sleep(POLL)
        return time.perf_counter() - started

    return asyncio.run(run())


def show(label: str, values: list[float]) -> None:
    print(
        f"{label:<44} median {statistics.median(values):6.2f} s   "
        f"range {min(values):6.2f} .. {max(values):6.2f} s   ({len(values)} rounds)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with anvil_session() as chain, tempfile.TemporaryDirectory() as tmp:
        deployment = chain.deployment
        data = Path(tmp) / "data"
        env = node_env(
            data,
            CHR_CHAIN_RPC=chain.rpc_url,
            CHR_CHAIN_ID=str(chain.anvil.chain_id),
            CHR_BNS_CONTRACT=deployment.bns,
            CHR_FLEET_CONTRACT=deployment.fleet,
            CHR_CHAI_CONTRACT=deployment.chai,
            CHR_TICKET_REGISTRY_CONTRACT=deployment.ticket_registry,
            CHR_REQUIRE_TICKETS="true",
            CHR_LOG_LEVEL="warning",
        )
        init = [sys.executable, "-m", "chrnode.cli", "init", "--quiet"]
        node_hex = subprocess.run(init, env=env, capture_output=True, text=True, check=True).stdout.strip()
        fleet, bns = Fleet(chain.rpc, chain.address("fleet")), Bns(chain.rpc, chain.address("bns"))
        fleet.set_node_allowed(DEPLOYER, parse_address(node_hex))
        device = DeviceKey.create(Path(tmp) / "device.key")
        other = DeviceKey.create(Path(tmp) / "other.key")
        bns.register(DEPLOYER, "com:moving", [other.address], chain.block_timestamp() + 86400)
        node = NodeProcess(data)
        node.env, node.rpc_port = env, int(env["CHR_RPC_PORT"])
        node.start()
        try:
            port = int(node.rpc("chr_node_info")["ports"]["edge2"][0])
            address = parse_address(node_hex)

            async def ticket_accepted() -> bool:
                client = await connect("127.0.0.1", port, device, expect_node=address, auto_tickets=False)
                try:
                    return await client.tickets.send(minimum=client.tickets.paid + 1) is not None
                finally:
                    await client.close()

            async def ticket_refused() -> bool:
                return not await ticket_accepted()

            async def direct_allowed() -> bool:
                return fleet.device_allowed(device.address)

            async def direct_refused() -> bool:
                return not fleet.device_allowed(device.address)

            results: dict[str, list[float]] = {k: [] for k in ("chain_allow", "allow", "revoke", "name")}
            asyncio.run(ticket_refused())  # the node caches the refusal
            for round_ in range(args.rounds):
                fleet.set_device_allowed(DEPLOYER, device.address, True)
                results["chain_allow"].append(seconds_until(direct_allowed))
                results["allow"].append(seconds_until(ticket_accepted))
                fleet.set_device_allowed(DEPLOYER, device.address, False)
                seconds_until(direct_refused)
                results["revoke"].append(seconds_until(ticket_refused))
                target = device if round_ % 2 == 0 else other
                node.rpc("bns_resolve", ["moving.chronara.com"])  # cached before the move
                bns.update(DEPLOYER, "com:moving", [target.address], chain.block_timestamp() + 86400)
                want = ["0x" + target.address.hex()]

                async def moved(want: list[str] = want) -> bool:
                    return bool(node.rpc("bns_resolve", ["moving.chronara.com"])["devices"] == want)

                results["name"].append(seconds_until(moved))
        finally:
            node.stop()
    ttl = CATEGORIES["contracts"].ttl
    print(f"baseline: without the event watch a change waits for the contracts TTL, {ttl:g} s")
    show("baseline: direct eth_call sees an allow", results["chain_allow"])
    show("node: allowed device's ticket accepted", results["allow"])
    show("node: revoked device's ticket refused", results["revoke"])
    show("node: moved name resolves to its new device", results["name"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
