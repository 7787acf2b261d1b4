"""A local network of full nodes on loopback, for tools/localnet and the tests (issue 10 item 7).

    net = Localnet(Path("localnet"), 3)
    net.start()                   # node 0 first, then the others joining through it
    net.nodes[1].rpc("peer_list")
    net.stop()                    # and `net.leftovers()` is empty

Every node is a real `chr-node start` (chrnode.testing.node.NodeProcess) with its own data dir
``<dir>/node<i>``, every port 0 (read back from its ports.json), and ``CHR_FLEET_NODES`` naming
the first ``seeds`` nodes. With ``chain=True`` one anvil (tools/devchain, in ``<dir>/chain``)
serves all of them, with every node allowed in the fleet and its contracts.json copied to each
node; without, the nodes run chainless (tests: faster). ``<dir>/localnet.json`` records what runs
so that another process (`tools/localnet status|stop`) finds it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from chrnode.testing.node import NodeProcess

__all__ = ["Localnet", "LocalnetError", "read_state"]

ROOT = Path(__file__).resolve().parents[2]
STATE_FILE = "localnet.json"


class LocalnetError(Exception):
    pass


def node_dir(directory: Path, index: int) -> Path:
    return directory / f"node{index}"


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


class Localnet:
    def __init__(
        self,
        directory: Path,
        count: int,
        *,
        seeds: int = 1,
        chain: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        if count < 1:
            raise LocalnetError("a localnet needs at least one node")
        self.directory = Path(directory).resolve()
        self.count = count
        self.seeds = max(1, min(seeds, count))
        self.chain = chain
        self.env = dict(env or {})
        self.nodes: list[NodeProcess] = []
        self.addresses: list[str] = []
        self.chain_url = ""

    # ---- start ------------------------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> Localnet:
        self.directory.mkdir(parents=True, exist_ok=True)
        if read_state(self.directory) is not None and self._running_pids():
            raise LocalnetError(f"a localnet runs in {self.directory} already; stop it first")
        self.addresses = [self._init(i) for i in range(self.count)]
        if self.chain:
            self._start_chain()
        self.nodes = [NodeProcess(node_dir(self.directory, i), **self._env(i, [])) for i in range(self.count)]
        try:
            # The seeds first (node 0 has none of its own), then every other node joining them.
            for i in range(self.seeds):
                self.nodes[i].env.update(self._env(i, self._fleet(range(i))))
                self.nodes[i].start(timeout)
            fleet = self._fleet(range(self.seeds))
            rest = list(range(self.seeds, self.count))
            for i in rest:
                self.nodes[i].env.update(self._env(i, fleet))
            with ThreadPoolExecutor(max(1, len(rest))) as pool:
                list(pool.map(lambda i: self.nodes[i].start(timeout), rest))
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self

    def _init(self, index: int) -> str:
        env = NodeProcess(node_dir(self.directory, index)).env
        out = subprocess.run(
            [sys.executable, "-m", "chrnode.cli", "init", "--quiet"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise LocalnetError(f"chr-node init for node{index} failed: {out.stderr.strip()}")
        return out.stdout.strip().splitlines()[-1]

    def _start_chain(self) -> None:
        chain_dir = self.directory / "chain"
        args = [sys.executable, str(ROOT / "tools" / "devchain"), "--data-dir", str(chain_dir), "--port", "0"]
        for address in self.addresses:
            args += ["--node", address]
        out = subprocess.run(args, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise LocalnetError(f"tools/devchain failed: {out.stderr.strip() or out.stdout.strip()}")
        info = json.loads((chain_dir / "chain" / "anvil.json").read_text(encoding="utf-8"))
        self.chain_url = str(info["url"])
        for i in range(self.count):
            shutil.copyfile(chain_dir / "contracts.json", node_dir(self.directory, i) / "contracts.json")

    def _fleet(self, indices: range) -> list[str]:
        out = []
        for i in indices:
            peer = self.nodes[i].ports.get("peer2") if i < len(self.nodes) else None
            if peer:
                out.append(f"{self.addresses[i]}@127.0.0.1:{peer}")
        return out

    def _env(self, index: int, fleet: list[str]) -> dict[str, str]:
        env = {
            "CHR_FLEET_NODES": ",".join(fleet),
            "CHR_HOST": "127.0.0.1",
            # Every node dials from 127.0.0.1: the peer port's per-address caps must fit them all
            # (the defaults, 16 and 64, up to 8 nodes).
            "CHR_PEER_MAX_CONNS_PER_IP": str(max(16, 2 * self.count)),
            "CHR_PEER_MAX_CONNS_PER_SUBNET": str(max(64, 4 * self.count)),
            **self.env,
        }
        if self.chain_url:
            env["CHR_CHAIN_RPC"] = self.chain_url
        return env

    def _write_state(self) -> None:
        state = {
            "chain": self.chain_url,
            "nodes": [
                {
                    "index": i,
                    "address": self.addresses[i],
                    "data_dir": str(node.data_dir),
                    "pid": node.proc.pid if node.proc is not None else None,
                    "descendants": sorted(node._descendants),
                    "ports": node.ports,
                }
                for i, node in enumerate(self.nodes)
            ],
        }
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")

    # ---- one node ----------------------------------------------------------------------------------
    def restart(self, index: int, timeout: float = 90.0) -> NodeProcess:
        """Start node ``index`` again (after stop_node or kill_node), same data dir and fleet."""
        old = self.nodes[index]
        node = NodeProcess(old.data_dir, **{k: v for k, v in old.env.items() if k.startswith("CHR_")})
        self.nodes[index] = node.start(timeout)
        self._write_state()
        return node

    def kill_node(self, index: int) -> None:
        self.nodes[index].kill()

    # ---- status and stop -----------------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        rows = []
        for i, node in enumerate(self.nodes):
            ports = node.ports
            rows.append(
                {
                    "node": i,
                    "address": self.addresses[i] if i < len(self.addresses) else "",
                    "rpc": ports.get("rpc"),
                    "edge2": ports.get("edge2"),
                    "peer2": ports.get("peer2"),
                    "actor_admin": ports.get("actor_admin"),
                    "data_dir": str(node.data_dir),
                }
            )
        return rows

    def _running_pids(self) -> list[int]:
        state = read_state(self.directory) or {}
        pids = []
        for node in state.get("nodes", []):
            for pid in [node.get("pid"), *node.get("descendants", [])]:
                if isinstance(pid, int) and _alive(pid):
                    pids.append(pid)
        return pids

    def stop(self) -> list[int]:
        """Stop every node (SIGTERM, then what is left is killed) and the chain; the pids left."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.stop()
            except AssertionError:
                node.kill()
        if self.chain:
            stop_chain(self.directory)
        left = self.leftovers()
        try:
            (self.directory / STATE_FILE).unlink()
        except FileNotFoundError:
            pass
        return left

    def leftovers(self) -> list[int]:
        return sorted({pid for node in self.nodes for pid in node.leftovers()})


def stop_recorded(directory: Path, timeout: float = 30.0) -> list[int]:
    """Stop a localnet started by another process (from its localnet.json); the pids left."""
    state = read_state(directory) or {}
    pids: list[int] = []
    for node in state.get("nodes", []):
        pid = node.get("pid")
        if isinstance(pid, int) and _alive(pid):
            os.kill(pid, signal.SIGTERM)
        pids += [p for p in [pid, *node.get("descendants", [])] if isinstance(p, int)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if state.get("chain"):
        stop_chain(directory)
    time.sleep(0.2)
    try:
        (directory / STATE_FILE).unlink()
    except FileNotFoundError:
        pass
    return [p for p in pids if _alive(p)]


def stop_chain(directory: Path) -> None:
    devchain = str(ROOT / "tools" / "devchain")
    subprocess.run(
        [sys.executable, devchain, "--data-dir", str(directory / "chain"), "--stop"],
        capture_output=True,
        check=False,
    )


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
