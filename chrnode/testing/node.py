"""Run a real `chr-node start` process for tests, benchmarks and tools, on free loopback ports.

Every port is configured 0 (the node binds free ones, Thespian's admin port included) and read
back from the node's ports file (`<data_dir>/ports.json`, chrnode.ports_file): no port is guessed
free and then raced for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from chrnode.ports_file import read_ports


def node_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for a node on OS-picked ports bound to loopback, with its data in `data_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHR_")}
    env.update(
        {
            "CHR_DATA_DIR": str(data_dir),
            "CHR_RPC_PORT": "0",
            "CHR_RPCS_PORT": "0",
            "CHR_EDGE2_PORTS": "0,0",
            "CHR_PEER2_PORT": "0",
            "CHR_ACTOR_ADMIN_PORT": "0",
            "CHR_RPC_BIND": "127.0.0.1",
            "CHR_BIND_ADDRESS": "127.0.0.1",
            "CHR_LOG_LEVEL": "info",
            "CHR_REQUIRE_TICKETS": "false",
        }
    )
    env.update(overrides)
    return env


class NodeProcess:
    """`chr-node start` in its own session; `stop()` SIGTERMs it and checks nothing is left.

    After `start()`, `ports` holds the node's ports file (rpc, rpcs, edge2, peer2, actor_admin)
    and `rpc_port` its JSON-RPC port.
    """

    def __init__(self, data_dir: Path, **env_overrides: str) -> None:
        self.data_dir = Path(data_dir)
        self.env = node_env(self.data_dir, **env_overrides)
        self.ports: dict[str, Any] = {}
        self.rpc_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-stderr.log"
        self._descendants: set[int] = set()

    @property
    def admin_port(self) -> int:
        """Thespian's admin port (to join the node's actor system from a test)."""
        return int(self.ports["actor_admin"])

    @property
    def edge_ports(self) -> list[int]:
        return [int(p) for p in self.ports["edge2"]]

    def start(self, timeout: float = 90.0) -> NodeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chrnode.cli", "start"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"chr-node exited with {self.proc.returncode}:\n{self.log()}")
            if not self._read_ports():
                time.sleep(0.1)
                continue
            try:
                info = self.rpc("chr_node_info")
            except (OSError, ValueError):
                time.sleep(0.1)
                continue
            tree = info.get("tree", [])
            if tree and all(a.get("state") == "running" for a in tree):
                self._remember_descendants()
                return self
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"chr-node did not become ready in {timeout} s:\n{self.log()}")

    def _read_ports(self) -> bool:
        """Take the ports from the ports file of this run (its pid is this process's)."""
        assert self.proc is not None
        ports = read_ports(self.data_dir)
        if ports is None or ports.get("pid") != self.proc.pid:
            return False
        self.ports = ports
        self.rpc_port = int(ports["rpc"])
        return True

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def token(self) -> str:
        from chrnode.rpc.server import read_cookie

        return read_cookie(self.data_dir / ".cookie")

    def post(
        self, body: bytes | str, headers: dict[str, str] | None = None, path: str = "/rpc"
    ) -> tuple[int, Any]:
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.rpc_port}{path}",
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def rpc(self, method: str, params: Any = None, admin: bool = False) -> Any:
        headers = {"Authorization": f"Bearer {self.token()}"} if admin else {}
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        _, reply = self.post(body, headers)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def actor_pid(self, name: str) -> int:
        for actor in self.rpc("chr_node_info")["tree"]:
            if actor["name"] == name:
                return int(actor["pid"])
        raise KeyError(name)

    def _remember_descendants(self) -> None:
        """The daemon's processes: its own children, and Thespian's admin (which detaches itself
        with setsid and a double fork) with everything under it, found from the actors' pids.
        The daemon's ancestors (this test runner among them) are never counted."""
        if self.proc is None:
            return
        try:
            self._descendants |= {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
            tree = self.rpc("chr_node_info").get("tree", [])
        except (psutil.Error, OSError, ValueError, RuntimeError):
            return
        # This process and its ancestors: an actor's pid that is stale (the actor died and the
        # pid went to a process of ours, a test's helper) climbs to one of them, which must not
        # be taken, with all its children, for the node's (a localnet "outlived stop" by the
        # script that ran pytest, seen under load).
        ours = {os.getpid()} | {p.pid for p in psutil.Process().parents()}
        for actor in tree:
            try:
                process = psutil.Process(int(actor["pid"]))
                # Up to Thespian's admin: the daemon's child (it adopts it as subreaper), or
                # init's child where that is not possible; never past the daemon.
                while process.ppid() not in (1, self.proc.pid) and process.parent() is not None:
                    if process.pid in ours:
                        break
                    process = process.parent()
                if process.pid == self.proc.pid or process.pid in ours:
                    continue
                self._descendants |= {process.pid} | {p.pid for p in process.children(recursive=True)}
            except (psutil.Error, ValueError, KeyError):
                continue

    def leftovers(self) -> list[int]:
        """Processes of this node (seen while it ran) still alive and not zombies."""
        alive = []
        for pid in self._descendants:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        return alive

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for exit, and wait (bounded) for every process of the node to be gone."""
        if self.proc is None:
            return 0
        self._remember_descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"chr-node did not stop within {timeout} s of SIGTERM:\n{self.log()}"
            ) from None
        deadline = time.monotonic() + 10
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)
        return code

    def kill(self) -> None:
        """SIGKILL the whole session (used for crash tests and cleanup)."""
        if self.proc is None:
            return
        self._remember_descendants()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in self._descendants:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)
