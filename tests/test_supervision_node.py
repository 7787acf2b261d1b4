"""Supervision on a real `chr-node start` (SPEC 9): blast radius, admin restarts, SIGTERM with a hung
actor, and asks that fail fast while an actor restarts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chrnode.crypto import parse_address
from chrnode.device.client import connect
from chrnode.device.key import DeviceKey
from chrnode.testing.anvil import DevChain
from chrnode.testing.node import NodeProcess

pytestmark = pytest.mark.slow


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout} s (last error: {last})")


def tree(node: NodeProcess) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in node.rpc("chr_node_info")["tree"]}


def whole_with_new(node: NodeProcess, name: str, old_pid: int) -> bool:
    rows = tree(node)
    return all(r["state"] == "running" for r in rows.values()) and rows[name]["pid"] not in (0, old_pid)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("super") / "data")
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()


def test_a_device_session_survives_crashes_of_actors_device_traffic_does_not_need(
    node: NodeProcess, tmp_path: Path
) -> None:
    info = node.rpc("chr_node_info")
    node_address = parse_address(info["address"])
    key = DeviceKey.create(tmp_path / "device.key")
    listener = tree(node)["Network.EdgeV2.Listener"]["pid"]

    async def session() -> None:
        client = await connect("127.0.0.1", info["ports"]["edge2"][0], key, expect_node=node_address)
        loop = asyncio.get_running_loop()
        try:
            assert await client.ping() >= 0
            for name in ("Stats", "PubSub", "Cron", "Network.Stats", "Connectivity"):
                old = tree(node)[name]["pid"]
                os.kill(old, signal.SIGKILL)
                await loop.run_in_executor(
                    None,
                    lambda n=name, p=old: wait_until(lambda: whole_with_new(node, n, p), what=f"{n} back"),
                )
                assert await client.ping() >= 0, f"the device session is still up after {name} crashed"
        finally:
            await client.close()

    asyncio.run(session())
    rows = tree(node)
    assert rows["Network.EdgeV2.Listener"]["pid"] == listener, "the listener was not restarted"
    assert rows["Stats"]["restarts"] >= 1 and rows["PubSub"]["restarts"] >= 1


def test_admin_restart_is_logged_and_counted_as_requested(node: NodeProcess) -> None:
    before = tree(node)["Cron"]
    node.rpc("admin_restart_actor", ["Cron"], admin=True)
    row = wait_until(
        lambda: (r := tree(node)["Cron"])["state"] == "running" and r["pid"] != before["pid"] and r,
        what="Cron restarted",
    )
    assert row["requested_restarts"] == before["requested_restarts"] + 1
    assert row["restarts"] == before["restarts"], "an admin restart is not a crash"
    log = wait_until(
        lambda: (
            (text := (node.data_dir / "chr-node.log").read_text())
            and "Cron restarting as requested" in text
            and text
        ),
        what="the log line",
    )
    assert "Cron exited" not in log.split("Cron restarting as requested")[-1]


def test_sigterm_with_a_hung_actor_stops_within_its_shutdown_timeout(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data")
    node.start()
    try:
        hung = tree(node)["Cron"]["pid"]
        os.kill(hung, signal.SIGSTOP)
        started = time.monotonic()
        code = node.stop(timeout=40)
        took = time.monotonic() - started
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
    log = (node.data_dir / "chr-node.log").read_text()
    assert code == 0
    # Seen once at 16.5 s in a whole-suite run, never in 10 runs alone: on failure the log says where.
    tail = "\n".join(line for line in log.splitlines()[-40:] if " DEBUG " not in line)
    assert took < 5.0 + 8.0, f"stop took {took:.1f} s; Cron's shutdown timeout is 5 s, then a kill:\n{tail}"
    assert node.leftovers() == []
    assert "killing Cron" in log


def eth_block_number(node: NodeProcess) -> tuple[dict[str, Any], float]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.rpc_port}/", body, {"Content-Type": "application/json"}
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = json.loads(response.read())
    return reply, time.monotonic() - started


def test_a_call_to_a_restarting_actor_fails_fast(devchain: DevChain, tmp_path: Path) -> None:
    node = NodeProcess(
        tmp_path / "data", CHR_CHAIN_RPC=devchain.rpc_url, CHR_CHAIN_ID=str(devchain.anvil.chain_id)
    )
    node.start()
    try:
        reply, _ = eth_block_number(node)
        assert "result" in reply, reply
        for _ in range(3):
            old = tree(node)["RemoteChain.Cache"]["pid"]
            os.kill(old, signal.SIGKILL)
            reply, took = eth_block_number(node)
            assert took < 2.0, f"eth_blockNumber right after the kill took {took:.1f} s: {reply}"
            if "error" in reply:
                assert "restarting" in reply["error"]["message"], reply
            wait_until(lambda o=old: whole_with_new(node, "RemoteChain.Cache", o), what="Cache back")
            reply, _ = eth_block_number(node)
            assert "result" in reply, reply
    finally:
        code = node.stop()
    assert code == 0, node.log()
