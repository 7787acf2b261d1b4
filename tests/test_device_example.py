"""The worked device example of the README and docs/devices.md, run as written on the tools/run
configuration: a dev chain with the contracts deployed by tools/devchain, tickets required; two
devices, publish and bind, a web page fetched with curl through the node, and both sessions still
up after the ticket deadline (shortened by config) while a device that does not pay is cut off."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chrnode.chain.contracts import Fleet
from chrnode.chain.deploy import Deployment
from chrnode.crypto import parse_address
from chrnode.device.client import connect
from chrnode.device.key import DeviceKey
from chrnode.errors import ConnectionClosed
from chrnode.testing.anvil import DEPLOYER, REPO_ROOT, AnvilProcess, anvil_session, skip_or_fail_without_anvil
from chrnode.testing.devices import DeviceCli, devchain_node
from chrnode.testing.node import NodeProcess

pytestmark = [pytest.mark.slow, pytest.mark.chain]

GUIDE = (REPO_ROOT / "docs" / "devices.md").read_text(encoding="utf-8")
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
TICKET_TIMEOUT = 3  # the node's deadline for a first ticket (30 s by default)
PAGE = "<h1>hello through chr-node</h1>"

# The guide's steps (section 6), as printed there. The test runs them with free ports for 8000 and
# 9000, a temporary directory for /tmp/chr-site, and the venv's chr-node for .venv/bin/chr-node;
# `tools/run` is the node below, set up as tools/run sets it up.
SITE = f"mkdir -p /tmp/chr-site && echo '{PAGE}' > /tmp/chr-site/index.html"
SERVE = "python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp/chr-site &"
KEYGEN_A = ".venv/bin/chr-node device keygen --key a.key"
PUBLISH = ".venv/bin/chr-node device publish --key a.key --port web --local 127.0.0.1:8000"
KEYGEN_B = ".venv/bin/chr-node device keygen --key b.key"
ADDRESS = "A=$(.venv/bin/chr-node device address --key a.key)"
BIND = '.venv/bin/chr-node device bind --key b.key --device "$A" --port web --local-port 9000'
CURL = "curl http://127.0.0.1:9000/"
STEPS = (SITE, SERVE, KEYGEN_A, PUBLISH, KEYGEN_B, ADDRESS, BIND, CURL)


def test_the_guide_and_the_readme_show_these_steps() -> None:
    for step in ("tools/run", *STEPS):
        assert f"    {step}\n" in GUIDE, step  # an indented code line of its own
    assert "docs/devices.md" in README
    for step in ("tools/run", SERVE.split(" --directory")[0], KEYGEN_A, PUBLISH, KEYGEN_B, CURL):
        assert step in README, step


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    skip_or_fail_without_anvil()
    with anvil_session(deploy=False) as chain:  # tools/devchain deploys, as in tools/run
        yield chain.anvil


class Shell:
    """Runs the guide's lines in a working directory of their own, with the node's environment."""

    def __init__(self, cwd: Path, node: NodeProcess, web_port: int, local_port: int) -> None:
        self.cwd = cwd
        self.env = dict(node.env)
        self.web_port = web_port
        self.subs = {
            "/tmp/chr-site": str(cwd / "chr-site"),
            ".venv/bin/chr-node": str(Path(sys.executable).parent / "chr-node"),
            " 8000": f" {web_port}",
            ":8000": f":{web_port}",
            ":9000": f":{local_port}",
            " 9000": f" {local_port}",
        }
        if not Path(self.subs[".venv/bin/chr-node"]).exists():  # a venv without console scripts
            self.subs[".venv/bin/chr-node"] = f"{sys.executable} -m chrnode.cli"

    def line(self, step: str) -> str:
        for old, new in self.subs.items():
            step = step.replace(old, new)
        return step

    def run(self, *steps: str) -> str:
        script = "\n".join(["set -e", *(self.line(step) for step in steps)])
        done = subprocess.run(
            ["bash", "-c", script], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{steps}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, *steps: str) -> DeviceCli:
        """The last step runs on (exec'd by bash, so that Ctrl-C reaches it)."""
        *before, last = (self.line(step).removesuffix(" &") for step in steps)
        return DeviceCli(["bash", "-c", "\n".join([*before, "exec " + last])], self.env, self.cwd)


def fetch(shell: Shell) -> str:
    if shutil.which("curl"):
        return shell.run(CURL)
    # A machine without curl: the same GET with Python.
    url = shell.line(CURL).split()[1]
    with urllib.request.urlopen(url, timeout=20) as response:
        return str(response.read().decode())


async def unpaid_device(host: str, port: int, node: bytes) -> ConnectionClosed | None:
    """A device that proves its key and sends no ticket: the node must close it when the ticket
    deadline passes (what the two devices of the example would get if they did not pay)."""
    client = await connect(host, port, DeviceKey.generate(), node, auto_tickets=False)
    await asyncio.wait_for(client.wait_closed(), TICKET_TIMEOUT + 60)
    return client.closed_reason


def test_two_devices_and_a_web_page_through_the_node(anvil: AnvilProcess, tmp_path: Path) -> None:
    from chrnode.actorsys import free_port

    node = devchain_node(tmp_path / "data", anvil, CHR_TICKET_TIMEOUT=str(TICKET_TIMEOUT))
    shell = Shell(tmp_path / "work", node, free_port(), free_port())
    shell.cwd.mkdir()
    deployment = Deployment.load(node.data_dir / "contracts.json")
    fleet = Fleet(anvil.rpc(), bytes.fromhex(deployment.fleet[2:]))
    started: list[DeviceCli] = []
    node.start()
    try:
        shell.run(SITE)
        started.append(shell.start(SERVE))
        wait_listening(shell.web_port)  # a person types the next lines meanwhile
        assert re.fullmatch(
            r"device 0x[0-9a-fA-F]{40} \(key written to a\.key, mode 0600\)\n", shell.run(KEYGEN_A)
        )
        a = DeviceKey.load(shell.cwd / "a.key")
        admit(fleet, a)
        started.append(publisher := shell.start(PUBLISH))
        publisher.wait_for(
            rf"^publishing 127\.0\.0\.1:\d+ as port 'web' of device {a.hex_address}; Ctrl-C stops$"
        )
        shell.run(KEYGEN_B)
        b = DeviceKey.load(shell.cwd / "b.key")
        admit(fleet, b)
        started.append(binder := shell.start(ADDRESS, BIND))
        binder.wait_for(rf"^127\.0\.0\.1:\d+ reaches port 'web' of {a.hex_address}; Ctrl-C stops$")

        assert fetch(shell).strip() == PAGE

        # Past the ticket deadline: a device that pays nothing, connected after both, is cut off
        # with ticket_required; the example's devices paid and are still connected.
        edge_port = node.edge_ports[0]
        node_address = parse_address(node.rpc("chr_node_info")["address"])
        reason = asyncio.run(unpaid_device("127.0.0.1", edge_port, node_address))
        assert reason is not None and reason.code == "ticket_required", reason
        assert publisher.proc.poll() is None and binder.proc.poll() is None
        assert fetch(shell).strip() == PAGE  # the same bind session, after the deadline
        for device in (publisher, binder):
            assert "ticket refused" not in device.stderr and "closed the connection" not in device.stderr
        publisher.wait_for(r"port 'web' opened by " + b.hex_address, "stderr")
    finally:
        for process in reversed(started):
            process.stop()
        node.stop()
    assert publisher.proc.returncode == 0 and binder.proc.returncode == 0  # Ctrl-C is a normal end


def admit(fleet: Fleet, device: DeviceKey) -> None:
    """Nothing to do where tools/devchain opened the dev fleet's device list (issue 7 item 1, the
    chainops branch): the guide's devices relay with no extra step, and this test checks that.
    Until that is merged here, the devices are allowed with the deployer key tools/devchain
    deploys with: the one step the guide would otherwise need."""
    devices_open = getattr(fleet, "devices_open", None)
    if devices_open is not None and devices_open():
        return
    fleet.set_device_allowed(DEPLOYER, device.address)


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s") from None
            time.sleep(0.05)
