"""tools/devchain: starts anvil with persistent state, deploys once, allows nodes, stops (SPEC 7)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chrnode.chain.contracts import Fleet
from chrnode.chain.deploy import Deployment
from chrnode.chain.rpc import RemoteRpc
from chrnode.testing.anvil import DEPLOYER, REPO_ROOT, skip_or_fail_without_anvil

pytestmark = pytest.mark.chain  # needs anvil from `npm ci`

DEVCHAIN = REPO_ROOT / "tools" / "devchain"
NODE = "0x" + "5a" * 20


def devchain(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEVCHAIN), "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    skip_or_fail_without_anvil()
    yield tmp_path
    # Whatever the test did, leave no anvil behind.
    info = tmp_path / "chain" / "anvil.json"
    if info.exists():
        devchain(tmp_path, "--stop")
        pid = json.loads(info.read_text())["pid"] if info.exists() else None
        if pid is not None and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def url_of(data_dir: Path) -> str:
    return str(json.loads((data_dir / "chain" / "anvil.json").read_text())["url"])


@pytest.mark.slow
def test_devchain_is_idempotent_and_keeps_state_across_restarts(data_dir: Path) -> None:
    first = devchain(data_dir, "--port", "0", "--node", NODE)
    assert first.returncode == 0, first.stderr
    assert "deployed TicketRegistry" in first.stdout and f"node {NODE} added" in first.stdout
    deployment = Deployment.load(data_dir / "contracts.json")
    assert deployment.chain_id == 31337
    with RemoteRpc([url_of(data_dir)], 31337, timeout=5.0) as rpc:
        for address in (deployment.bns, deployment.fleet, deployment.chai, deployment.ticket_registry):
            assert rpc.get_code(address), address
        fleet = Fleet(rpc, deployment.fleet)
        assert fleet.node_allowed(NODE)
        # The development fleet admits any device, and the node can pay for ticket submission.
        assert fleet.devices_open() and fleet.device_allowed("0x" + "77" * 20)
        assert not fleet.device_listed("0x" + "77" * 20)
        assert rpc.get_balance(NODE) == 100 * 10**18
        # An operator who closes it keeps it closed across devchain runs.
        fleet.set_devices_open(DEPLOYER, False)

    again = devchain(data_dir, "--port", "0", "--node", NODE)
    assert again.returncode == 0, again.stderr
    assert "anvil already running" in again.stdout and "already in the fleet allowlist" in again.stdout
    assert ": deployed " not in again.stdout and again.stdout.count("already deployed") == 4
    assert Deployment.load(data_dir / "contracts.json") == deployment
    assert "device list closed" in again.stdout and "100 ETH (enough for gas)" in again.stdout

    stopped = devchain(data_dir, "--stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert (data_dir / "chain" / "anvil-state.json").stat().st_size > 0
    assert not (data_dir / "chain" / "anvil.json").exists()
    assert devchain(data_dir, "--status").returncode == 1

    restarted = devchain(data_dir, "--port", "0")
    assert restarted.returncode == 0, restarted.stderr
    assert "state loaded" in restarted.stdout and ": deployed " not in restarted.stdout
    with RemoteRpc([url_of(data_dir)], 31337, timeout=5.0) as rpc:
        assert Fleet(rpc, deployment.fleet).node_allowed(NODE)  # the allowlist survived the restart


@pytest.mark.slow
def test_a_fleet_from_before_the_open_device_list_is_replaced(data_dir: Path) -> None:
    assert devchain(data_dir, "--port", "0").returncode == 0
    path = data_dir / "contracts.json"
    record = json.loads(path.read_text())
    record["fleet"] = record["chai"]  # code there, but no devicesOpen(): like a Fleet of before
    path.write_text(json.dumps(record))
    again = devchain(data_dir, "--port", "0", "--node", NODE)
    assert again.returncode == 0, again.stderr
    assert "predates the open device list: deploying a new one" in again.stdout
    deployment = Deployment.load(path)
    assert deployment.fleet not in (record["fleet"], record["bns"]) and deployment.chai == record["chai"]
    with RemoteRpc([url_of(data_dir)], 31337, timeout=5.0) as rpc:
        fleet = Fleet(rpc, deployment.fleet)
        assert (
            fleet.devices_open()
            and fleet.node_allowed(NODE)
            and fleet.token() == bytes.fromhex(record["chai"][2:])
        )


def test_devchain_refuses_a_bad_node_address(data_dir: Path) -> None:
    result = devchain(data_dir, "--port", "0", "--node", "0x1234")
    assert result.returncode == 2
    assert "is not a node address" in result.stderr
    assert not (data_dir / "chain").exists()


def test_devchain_stop_without_a_chain_is_harmless(data_dir: Path) -> None:
    result = devchain(data_dir, "--stop")
    assert result.returncode == 0 and "not running" in result.stdout
