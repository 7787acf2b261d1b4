"""The chain on the default set-up, as an operator meets it (issue 7): a real node on the chain that
`tools/devchain` runs (open development fleet, contracts.json), a new device key relaying with no
extra step, ticket submission that fails visibly while the node cannot pay gas and reaches the
registry once `tools/devchain` funds it; and dead and hung first endpoints, visible in health and
costing no lookup more than one short timeout."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chrnode.actorsys import free_port
from chrnode.chain.contracts import TicketRegistry
from chrnode.chain.deploy import Deployment
from chrnode.chain.rpc import RemoteRpc
from chrnode.crypto import parse_address
from chrnode.device.client import connect
from chrnode.device.key import DeviceKey
from chrnode.testing.anvil import REPO_ROOT, DevChain, skip_or_fail_without_anvil
from chrnode.testing.chain import ChainWorld
from chrnode.testing.node import NodeProcess, node_env

pytestmark = [pytest.mark.slow, pytest.mark.chain]

DEVCHAIN = REPO_ROOT / "tools" / "devchain"
EPOCH = 3600  # seconds per epoch on this chain (tools/devchain --epoch-length)


def wait_for(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s (last: {value!r})")
        time.sleep(0.25)


def devchain(data: Path, *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            str(DEVCHAIN),
            "--data-dir",
            str(data),
            "--port",
            "0",
            "--epoch-length",
            str(EPOCH),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def default_setup(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """tools/run's steps: init the node, tools/devchain --node (here without gas first), start."""
    skip_or_fail_without_anvil()
    data = tmp_path / "data"
    env = node_env(
        data, CHR_REQUIRE_TICKETS="true", CHR_EPOCH_LENGTH=str(EPOCH), CHR_TICKET_SUBMIT_INTERVAL="2"
    )
    init = subprocess.run(
        [sys.executable, "-m", "chrnode.cli", "init", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    node_hex = init.stdout.strip()
    try:
        out = devchain(data, "--node", node_hex, "--fund", "0")
        assert "device list open" in out and "not funded" in out
        url = json.loads((data / "chain" / "anvil.json").read_text())["url"]
        node = NodeProcess(data)
        node.env = {**env, "CHR_CHAIN_RPC": url}
        node.rpc_port = int(env["CHR_RPC_PORT"])
        node.start()
        try:
            yield {
                "node": node,
                "data": data,
                "url": url,
                "address": parse_address(node_hex),
                "hex": node_hex,
            }
        finally:
            node.stop()
    finally:
        subprocess.run(
            [sys.executable, str(DEVCHAIN), "--data-dir", str(data), "--stop"], timeout=60, check=False
        )


def test_tickets_reach_the_registry_and_a_failed_submission_shows_as_failed(
    default_setup: dict[str, Any], tmp_path: Path
) -> None:
    node, address, url = default_setup["node"], default_setup["address"], default_setup["url"]
    deployment = Deployment.load(default_setup["data"] / "contracts.json")
    port = int(node.rpc("chr_node_info")["ports"]["edge2"][0])
    device = DeviceKey.create(tmp_path / "new-device.key")

    async def relay_a_ticket() -> int:
        client = await connect("127.0.0.1", port, device, expect_node=address, auto_tickets=False)
        try:
            reply = await client.tickets.send(minimum=4096)
            assert reply is not None, client.tickets.last_error  # no allow step: the dev fleet is open
            return int(client.tickets.paid)
        finally:
            await client.close()

    paid = asyncio.run(relay_a_ticket())
    assert paid >= 4096
    with RemoteRpc([url], 31337, timeout=5.0) as rpc:
        rpc.call("evm_increaseTime", [EPOCH])  # into the next epoch: the job submits the previous one
        rpc.call("evm_mine", [])
        registry = TicketRegistry(rpc, deployment.ticket_registry)
        epoch = registry.current_epoch() - 1

        def submit_failed() -> dict[str, Any] | None:
            jobs = {job["name"]: job for job in node.rpc("cron_jobs")["jobs"]}
            job = jobs.get("ticket_submit", {})
            return job if job.get("failures") and job.get("last_error") else None

        job = wait_for(submit_failed, 30, "ticket_submit reported as failed without gas")
        assert "not sent" in job["last_error"] and "nsufficient funds" in job["last_error"], job
        # Every 2 s (CHR_TICKET_SUBMIT_INTERVAL), failed or not: a run's end re-arms Cron's timer (it
        # once did not, and the job ran only when the 30 s connectivity check woke Cron).
        again = job["runs"] + 2
        wait_for(lambda: (j := submit_failed()) and j["runs"] >= again, 15, "two more runs, 2 s apart")
        health = node.rpc("health")["layers"]["integration"]
        assert health["status"] == "degraded" and "job ticket_submit failed" in health["reason"]
        chain = wait_for(
            lambda: (c := node.rpc("network_stats")["chain"])["node_balance"]["known"] and c, 30, "balance"
        )
        assert chain["node_balance"]["can_pay"] is False
        assert registry.bytes_served(address, epoch) == 0

        devchain(default_setup["data"], "--node", default_setup["hex"])  # funds the node, as tools/run does
        served = wait_for(lambda: registry.bytes_served(address, epoch), 30, "tickets on the registry")
        assert served == paid
        # The registry has them as soon as the transaction is mined; Cron hears of the run just after.
        job = wait_for(
            lambda: (
                (j := {j["name"]: j for j in node.rpc("cron_jobs")["jobs"]}["ticket_submit"])["last_error"]
                is None
                and j
            ),
            30,
            "the job's next run recorded as a success",
        )
        assert job["failures"] >= 1 and job["runs"] >= 2
        reward = wait_for(
            lambda: (r := node.rpc("reward_status")).get("bytes_served") not in (None, "0") and r,
            10,
            "reward",
        )
        assert reward["bytes_served"] == str(paid) and reward["last_submitted"] and reward["epoch"] == epoch
        balance = wait_for(
            lambda: (b := node.rpc("network_stats")["chain"]["node_balance"]).get("can_pay") and b,
            30,
            "can pay",
        )
        assert balance["eth"] > 0


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(1024)
        yield f"http://127.0.0.1:{hung.getsockname()[1]}"


def test_dead_and_hung_first_endpoints_show_in_health_and_cost_one_short_timeout(
    chain: DevChain, hung_endpoint: str, tmp_path: Path
) -> None:
    devchain = chain
    dead = f"http://127.0.0.1:{free_port()}"
    deployment = devchain.deployment
    helper = ChainWorld.build(devchain)
    names = [f"hung{i}" for i in range(8)]
    for name in names:
        helper.register(f"com:{name}", (b"\x05" * 20,))
    timeout = 1.0
    node = NodeProcess(
        tmp_path / "data",
        CHR_CHAIN_RPC=f"{dead},{hung_endpoint},{devchain.rpc_url}",
        CHR_CHAIN_ID=str(devchain.anvil.chain_id),
        CHR_CHAIN_TIMEOUT=str(timeout),
        CHR_BNS_CONTRACT=deployment.bns,
        CHR_FLEET_CONTRACT=deployment.fleet,
        CHR_CHAI_CONTRACT=deployment.chai,
        CHR_TICKET_REGISTRY_CONTRACT=deployment.ticket_registry,
    )
    node.start()
    try:
        # Warm the JSON-RPC and RemoteChain.Cache paths with a lookup that never reaches the chain
        # (a malformed name is refused first), so that the timings below are the chain's.
        node.post(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "bns_resolve", "params": ["bad..name"]}))
        costs = []
        for name in names:  # uncached lookups, spread over several backoff periods of the two
            started = time.monotonic()
            found = node.rpc("bns_resolve", [f"{name}.chronara.com"])
            costs.append(time.monotonic() - started)
            assert found["found"], found
            time.sleep(0.5)
        # The hung endpoint costs at most one lookup one short timeout (often none: the Monitor's
        # probe finds it first), not one lookup each time its backoff ends; the dead one costs nothing.
        assert sum(1 for cost in costs if cost >= timeout) <= 1, costs
        assert max(costs) < 3 * timeout, costs
        assert sorted(costs)[len(costs) // 2] < 0.5, costs

        def states() -> dict[str, str] | None:
            rows = node.rpc("network_stats")["chain"]["endpoints"]
            found = {row["url"]: row["state"] for row in rows}
            bad = ("failing", "backing_off")
            return found if found.get(dead) in bad and found.get(hung_endpoint) in bad else None

        seen = wait_for(states, 20, "both bad endpoints visible in network_stats")
        assert seen[devchain.rpc_url] == "active"
        layer = node.rpc("health")["layers"]["integration"]
        assert layer["status"] == "degraded", layer
        assert dead in layer["reason"] and hung_endpoint in layer["reason"], layer
        with urllib.request.urlopen(f"http://127.0.0.1:{node.rpc_port}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        assert "chr_chain_endpoint_up{" in metrics and 'state="active"' in metrics
    finally:
        node.stop()
