"""Channels through a real `chr-node start`: the Channels actor's view over JSON-RPC and /metrics,
and a restart of that actor leaves the channel (which lives on the network loop) untouched."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from chrnode.crypto import PrivateKey, parse_address, to_hex_address
from chrnode.device.client import PortOffer, connect
from chrnode.testing.node import NodeProcess

pytestmark = pytest.mark.slow


def _wait(condition: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_chr_channels_reports_a_live_channel_and_survives_a_channels_restart(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    node = NodeProcess(tmp_path / "data")
    nodes.append(node)
    node.start()
    info = node.rpc("chr_node_info")
    address, edge = parse_address(info["address"]), info["ports"]["edge2"][0]
    tree = {a["name"]: a for a in info["tree"]}
    assert tree["Channels"]["parent"] == "ChronaraNode.Supervisor" and tree["Channels"]["state"] == "running"
    assert tree["Channels"]["restart_type"] == "permanent"

    async def scenario() -> None:
        target, *readers = [
            await connect("127.0.0.1", edge, PrivateKey.generate(), expect_node=address) for _ in range(3)
        ]

        async def accept(_offer: PortOffer) -> bool:
            return True

        target.on_portopen = accept
        target.shared_ports.add("feed")
        try:
            ports = [await readers[0].open_port(target.address, "feed", "rs")]
            channel = await target.accept()
            ports.append(await readers[1].open_port(target.address, "feed", "rs"))
            await channel.write(b"x" * 100_000)
            for port in ports:
                assert await port.readexactly(100_000) == b"x" * 100_000
            loop = asyncio.get_running_loop()

            def listed() -> Any:
                answer = node.rpc("chr_channels")
                return answer if answer["members"] == 2 and answer["bytes_delivered"] >= 200_000 else None

            answer = await loop.run_in_executor(None, _wait, listed, "chr_channels to show the channel")
            (row,) = answer["list"]
            assert row["target"] == to_hex_address(target.address) and row["port"] == "feed"
            assert {m["device"] for m in row["members"]} == {to_hex_address(r.address) for r in readers}
            stats = node.rpc("network_stats")["channels"]
            assert stats["channels"] == 1 and stats["members"] == 2

            def metrics() -> bool:
                with urllib.request.urlopen(f"http://127.0.0.1:{node.rpc_port}/metrics", timeout=10) as r:
                    text = r.read().decode()
                return "chr_stat_channel_members" in text and "chr_stat_channel_bytes_delivered_total" in text

            await loop.run_in_executor(None, _wait, metrics, "channel metrics")

            # Channels holds control state only: restarting it does not touch the channel.
            before = node.actor_pid("Channels")
            node.rpc("admin_restart_actor", ["Channels"], admin=True)
            await loop.run_in_executor(
                None,
                _wait,
                lambda: (
                    node.actor_pid("Channels") not in (before, 0) and node.rpc("chr_channels")["members"] == 2
                ),
                "Channels restarted with the channel listed again",
            )
            await channel.write(b"after the restart")
            for port in ports:
                assert await port.readexactly(17) == b"after the restart"

            # A crash too: Channels is independent under rest_for_one, so the listener (and with it
            # every device session and the channel) is not restarted along with it.
            listener, crashed = node.actor_pid("Network.EdgeV2.Listener"), node.actor_pid("Channels")
            os.kill(crashed, signal.SIGKILL)
            await loop.run_in_executor(
                None,
                _wait,
                lambda: (
                    node.actor_pid("Channels") not in (crashed, 0)
                    and node.rpc("chr_channels")["members"] == 2
                ),
                "Channels back after a crash, the channel listed again",
            )
            assert node.actor_pid("Network.EdgeV2.Listener") == listener
            await channel.write(b"after the crash")
            for port in ports:
                assert await port.readexactly(15) == b"after the crash"
        finally:
            await asyncio.gather(target.close(), *(r.close() for r in readers))

    try:
        asyncio.run(scenario())
    finally:
        assert node.stop() == 0
    assert node.leftovers() == []
