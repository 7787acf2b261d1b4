"""What the chaos run watches while it kills (chrnode.testing.chaos): a device pair relaying bytes
through the node without pause, the RPC polled without pause, and the node's processes as `ps`
shows them.

* `Relay`: two real devices (chrnode.device) on the node's device port, on an asyncio loop in a
  thread of their own; one opens a port to the other (SPEC 4) and writes a counted byte pattern
  into it continuously, the other reads and checks every byte. `broken` says why the port ended
  (closed, wrong byte); `reconnect()` builds a new pair; `probe()` connects a third device and
  pings (the edge port accepts a new device).
* `RpcPoller`: a thread that asks `chr_node_info` and `GET /health` every `every` seconds, each
  with a short timeout, and records when each answered; `gap(t0, t1)` is the longest time around
  a kill without an answer.
* `rpc(port, method)`, `get(port, path)`: one JSON-RPC call or GET with a short timeout.
* `processes(daemon_pid)`: the daemon's descendants by the title each gives itself
  (`chr-node: <Actor>`, chrnode.forkhooks), the way an operator reads `ps`.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future
from typing import Any

import psutil

from chrnode.crypto import PrivateKey
from chrnode.device.client import DeviceClient, PortOffer, connect

__all__ = ["Relay", "RpcPoller", "get", "pattern", "processes", "rpc", "title"]

CHUNK = 16 * 1024
PERIOD = 0.01  # seconds between chunks: about 1.6 MB/s, enough to see a stall, light on 2 cores
PORT_NAME = 7


def pattern(offset: int, size: int) -> bytes:
    """Bytes `offset .. offset+size` of the relayed stream: byte i is i mod 251 (a prime, so a
    chunk lost, doubled or reordered anywhere shows as a wrong byte)."""
    start = offset % 251
    reps = (start + size) // 251 + 1
    return (bytes(range(251)) * reps)[start : start + size]


def title(pid: int) -> str:
    """What ps shows for `pid` (setproctitle pads argv with NULs, which psutil splits on)."""
    return " ".join(part for part in psutil.Process(pid).cmdline() if part)


def processes(daemon_pid: int) -> dict[str, int]:
    """Title -> pid of every live descendant of the daemon (zombies left out)."""
    found: dict[str, int] = {}
    try:
        children = psutil.Process(daemon_pid).children(recursive=True)
    except psutil.Error:
        return found
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found[title(child.pid)] = child.pid
        except psutil.Error:
            continue
    return found


class Relay:
    """Two devices on one node, a port between them, bytes flowing and checked."""

    def __init__(self, host: str, port: int, node_address: bytes) -> None:
        self.host, self.port, self.node_address = host, port, node_address
        self.sent = 0
        self.received = 0
        self.broken: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-relay", daemon=True)
        self._clients: list[DeviceClient] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._thread.start()

    def _run(self, coro: Any, timeout: float) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def start(self, timeout: float = 30.0) -> Relay:
        self._run(self._open(), timeout)
        return self

    def reconnect(self, timeout: float = 30.0) -> None:
        """A new pair and a new port (after the old one broke); the counters start again."""
        self._run(self._close(), timeout)
        self.sent = self.received = 0
        self.broken = None
        self.start(timeout)

    def probe(self, timeout: float = 10.0) -> bool:
        """A new device connects, says hello and gets a pong: the edge port accepts devices."""
        try:
            return bool(self._run(self._probe(), timeout))
        except Exception:  # any failure to connect is the answer "no"
            return False

    def flowing(self, timeout: float = 5.0) -> bool:
        """The port is unbroken and bytes still arrive (more within `timeout` s)."""
        before = self.received
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.broken is None:
            if self.received > before:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        try:
            self._run(self._close(), 15.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
            self._loop.close()

    async def _device(self) -> DeviceClient:
        return await connect(self.host, self.port, PrivateKey.generate(), expect_node=self.node_address)

    async def _open(self) -> None:
        target = await self._device()

        async def accept(_offer: PortOffer) -> bool:
            return True

        target.on_portopen = accept
        opener = await self._device()
        self._clients = [opener, target]
        out = await opener.open_port(target.address, PORT_NAME)
        inbound = await asyncio.wait_for(target.accept(), 10)
        self._tasks = [
            self._loop.create_task(self._write(out)),
            self._loop.create_task(self._read(inbound)),
        ]

    async def _write(self, port: Any) -> None:
        try:
            while True:
                await port.write(pattern(self.sent, CHUNK))
                self.sent += CHUNK
                await asyncio.sleep(PERIOD)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the port ended: say how, once
            self.broken = self.broken or f"write failed: {type(exc).__name__}: {exc}"

    async def _read(self, port: Any) -> None:
        try:
            while True:
                data = await port.read(CHUNK * 4)
                if not data:
                    self.broken = self.broken or "the port was closed"
                    return
                if data != pattern(self.received, len(data)):
                    self.broken = f"wrong bytes at offset {self.received}"
                    return
                self.received += len(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.broken = self.broken or f"read failed: {type(exc).__name__}: {exc}"

    async def _probe(self) -> bool:
        client = await self._device()
        try:
            return await client.ping() >= 0
        finally:
            await client.close()

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for client in self._clients:
            try:
                await asyncio.wait_for(client.close(), 5)
            except Exception:  # a client of a dead session has nothing left to close
                continue
        self._clients = []


class RpcPoller:
    """`chr_node_info` and `GET /health` every `every` seconds; the times both answered."""

    def __init__(self, rpc_port: int, every: float = 0.1, timeout: float = 2.0) -> None:
        self.rpc_port, self.every, self.timeout = rpc_port, every, timeout
        self.answered: list[float] = []
        self.last_info: dict[str, Any] | None = None
        self.last_health: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-rpc-poller", daemon=True)

    def start(self) -> RpcPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(self.timeout * 3)

    def _get(self, path: str, body: bytes | None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.rpc_port}{path}",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # /health answers 503 with its layers when down
            return json.loads(exc.read())

    def _run(self) -> None:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "chr_node_info", "params": []}).encode()
        while not self._stopping.is_set():
            try:
                info = self._get("/rpc", body)["result"]
                health = self._get("/health", None)
            except (OSError, ValueError, KeyError, TypeError):
                info = None
            if info is not None:
                with self._lock:
                    self.answered.append(time.monotonic())
                    self.last_info, self.last_health = info, health
            self._stopping.wait(self.every)

    def gap(self, start: float, end: float) -> float:
        """The longest time without an answer between the last answer before `start` and the
        first after `end` (minus the polling interval: 0 when the RPC never missed a poll)."""
        with self._lock:
            times = list(self.answered)
        lo = max(bisect.bisect_right(times, start) - 1, 0)
        hi = bisect.bisect_left(times, end) + 1
        window = times[lo:hi]
        if len(window) < 2:
            return end - start
        longest = max(b - a for a, b in itertools.pairwise(window))
        return max(longest - self.every, 0.0)


def rpc(port: int, method: str, timeout: float = 3.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/rpc", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["result"]


def get(port: int, path: str, timeout: float = 3.0) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503 carries the layers too
        return json.loads(exc.read())
