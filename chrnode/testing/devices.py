"""Devices as a device maker runs them, for tests: `chr-node device ...` processes against a real
node, and the tools/run set-up of that node (a dev chain with contracts deployed by tools/devchain).

    node = devchain_node(tmp / "data", anvil, CHR_TICKET_TIMEOUT="3")   # as tools/run, on free ports
    node.start()
    web = DeviceCli.device(node, "publish", "--key", "a.key", "--port", "web", "--local", "127.0.0.1:8000")
    web.wait_for("publishing")
    print(run_device(node, "ping", "--key", "b.key").stdout)

Output is read by threads into lists, so a test waits for a line with a bound and never blocks on
a pipe; `stop()` sends SIGINT (the Ctrl-C the commands document) and kills after a bound.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from chrnode.testing.anvil import REPO_ROOT, AnvilProcess
from chrnode.testing.node import NodeProcess

__all__ = ["DeviceCli", "devchain_node", "edge_address", "run_device"]


def edge_address(node: NodeProcess) -> str:
    """HOST:PORT of the node's first device port (what `--node` takes)."""
    return f"127.0.0.1:{node.edge_ports[0]}"  # the port it bound (it may be configured 0)


def device_command(node: NodeProcess, action: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "chrnode.cli", "device", action, "--node", edge_address(node), *args]


def run_device(
    node: NodeProcess, action: str, *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `chr-node device ACTION ...` to its end (keygen, ping, a bind that fails at once)."""
    return subprocess.run(
        device_command(node, action, *args), env=node.env, capture_output=True, text=True, timeout=timeout
    )


class DeviceCli:
    """A long-running process (`chr-node device publish|bind ...`, a web server) and what it
    printed so far."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._changed = threading.Condition()  # an RLock inside: the properties re-enter it
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(stream, name), daemon=True)
            for stream, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr"))
        ]
        for reader in self._readers:
            reader.start()

    @classmethod
    def device(cls, node: NodeProcess, action: str, *args: str) -> DeviceCli:
        """`chr-node device ACTION --node <node's device port> ARGS...`."""
        return cls(device_command(node, action, *args), node.env)

    def _read(self, stream: IO[str], name: str) -> None:
        for line in stream:
            with self._changed:
                self._lines[name].append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stdout(self) -> str:
        with self._changed:
            return "\n".join(self._lines["stdout"])

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self._lines["stderr"])

    def wait_for(self, pattern: str, stream: str = "stdout", timeout: float = 60.0) -> re.Match[str]:
        """The first line of ``stream`` matching the regex ``pattern``; AssertionError after
        ``timeout`` s or when the process ends without printing it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines[stream]:
                    found = regex.search(line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                done = self.proc.poll() is not None and not any(r.is_alive() for r in self._readers)
                if left <= 0 or done:
                    raise AssertionError(
                        f"no {stream} line matching {pattern!r} "
                        f"({'exited ' + str(self.proc.returncode) if done else f'after {timeout} s'}); "
                        f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
                    )
                self._changed.wait(min(left, 0.5))

    def wait_exit(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code

    def stop(self, timeout: float = 20.0) -> int:
        """Ctrl-C (SIGINT), as a person ends `publish` or `bind`; SIGKILL if it does not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait_exit(timeout)


def devchain_node(data_dir: Path, anvil: AnvilProcess, **env: str) -> NodeProcess:
    """A node (not started) configured as `tools/run` leaves it: key from `chr-node init`, the
    contracts deployed and the node allowed by `tools/devchain --node` (contracts.json in the data
    dir), tickets required; the chain is the test's ``anvil``, recorded where tools/devchain looks
    for a running chain so that it deploys there instead of starting its own."""
    node = NodeProcess(data_dir, CHR_CHAIN_RPC=anvil.rpc_url, CHR_REQUIRE_TICKETS="true", **env)
    data_dir.mkdir(parents=True, exist_ok=True)
    node_hex = subprocess.run(
        [sys.executable, "-m", "chrnode.cli", "init", "--quiet"],
        env=node.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert anvil.process is not None
    chain_dir = data_dir / "chain"
    chain_dir.mkdir(exist_ok=True)
    record = {"pid": anvil.process.pid, "url": anvil.rpc_url, "chain_id": anvil.chain_id}
    (chain_dir / "anvil.json").write_text(json.dumps(record) + "\n", encoding="utf-8")
    deployed = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "devchain"),
            "--data-dir",
            str(data_dir),
            "--node",
            node_hex,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if deployed.returncode != 0:
        raise AssertionError(f"tools/devchain failed:\n{deployed.stdout}\n{deployed.stderr}")
    return node
