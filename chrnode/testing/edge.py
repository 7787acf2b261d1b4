"""Helpers shared by the EdgeV2 tests and benchmarks: a node identity in a directory, a running
EdgeServer on a free loopback port, devices connected to it, and a raw TLS frame client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from chrnode.config import Config
from chrnode.crypto import PrivateKey
from chrnode.device.client import DeviceClient, connect
from chrnode.edge.frame import VERSION
from chrnode.edge.hello import sign_hello
from chrnode.edge.hooks import DefaultHooks, EdgeHooks
from chrnode.edge.server import EdgeServer
from chrnode.identity import NodeIdentity, edge_client_context, edge_server_context, load_node_identity

__all__ = ["EdgeNode", "NodeThread", "RawFrameClient", "async_test", "start_node", "wait_for"]

TEST_EPOCH = 1000
T = TypeVar("T")


def async_test(
    timeout: float = 60.0,
) -> Callable[[Callable[..., Coroutine[Any, Any, None]]], Callable[..., None]]:
    """Run an ``async def`` test in a fresh event loop, bounded by ``timeout`` seconds."""

    def decorate(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout))

        return wrapper

    return decorate


@dataclasses.dataclass
class EdgeNode:
    """A running EdgeServer and what is needed to reach it."""

    server: EdgeServer
    identity: NodeIdentity
    hooks: DefaultHooks
    port: int
    host: str = "127.0.0.1"

    @property
    def address(self) -> bytes:
        return self.identity.address

    async def device(self, key: PrivateKey | None = None, **kwargs: Any) -> DeviceClient:
        """A device connected and past hello (with automatic tickets unless auto_tickets=False)."""
        return await connect(self.host, self.port, key or PrivateKey.generate(), self.address, **kwargs)

    async def stop(self) -> None:
        await self.server.stop()


def node_config(**overrides: Any) -> Config:
    """A Config for a test node: loopback, port 0, short timeouts unless overridden."""
    values: dict[str, Any] = {
        "edge2_ports": (0,),
        "bind_address": "127.0.0.1",
        "hello_timeout": 5.0,
        "connection_timeout": 5.0,
        "ticket_timeout": 30.0,
        "ticket_request_timeout": 15.0,
    }
    values.update(overrides)
    return Config(**values)


async def start_node(
    data_dir: Path, hooks: DefaultHooks | None = None, config: Config | None = None, **overrides: Any
) -> EdgeNode:
    """An EdgeServer with a fresh identity in ``data_dir``, listening on a free loopback port."""
    identity = load_node_identity(data_dir)
    hooks = hooks or DefaultHooks(epoch=TEST_EPOCH)
    cfg = config or node_config(**overrides)
    context = edge_server_context(identity.key_pem_path, identity.cert_path)
    edge_hooks: EdgeHooks = hooks
    server = EdgeServer(cfg, identity.key, context, edge_hooks)
    ports = await server.start()
    return EdgeNode(server, identity, hooks, ports[0])


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; AssertionError after ``timeout`` seconds (generous: shared CI)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


class NodeThread:
    """An EdgeNode on an event loop of its own thread, for tests that use blocking clients."""

    def __init__(self, data_dir: Path, hooks: DefaultHooks | None = None, **overrides: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="edge-node", daemon=True)
        self._thread.start()
        self._clients: list[RawFrameClient] = []
        self.node: EdgeNode = self.call(start_node(data_dir, hooks, **overrides))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the node's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Call ``fn()`` on the node's loop thread (to read server state safely)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(call)
        return future.result(timeout)

    def raw(self, source: str | None = None) -> RawFrameClient:
        """A raw client of this node; closed by stop() if the test did not close it."""
        client = RawFrameClient(self.node.host, self.node.port, source=source)
        self._clients.append(client)
        return client

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        try:
            self.call(self.node.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


class RawFrameClient:
    """A blocking TLS client speaking raw frames (for bad input and benchmarks): no checks at all."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, source: str | None = None) -> None:
        raw = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: ssl.SSLSocket = edge_client_context().wrap_socket(raw)
        self._buf = bytearray()

    def hello(self, key: PrivateKey, node: bytes, request_id: int = 1) -> dict[str, Any]:
        binding = self.sock.get_channel_binding("tls-unique")
        assert binding is not None
        payload = {"id": request_id, "device": key.address, "device_sig": sign_hello(key, binding, node),
                   "version": VERSION}  # fmt: skip
        self.send(0x01, payload)
        msg_type, _flags, answer = self.recv()
        if msg_type != 0x01 or not isinstance(answer, dict):
            raise AssertionError(f"expected the hello answer, got type 0x{msg_type:02x}: {answer!r}")
        return answer

    def send(self, msg_type: int, payload: Any, flags: int = 0) -> None:
        body = msgpack.packb(payload, use_bin_type=True)
        self.send_raw(struct.pack(">BBHI", VERSION, msg_type, flags, len(body)) + body)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> tuple[int, int, Any]:
        """The next frame as (type, flags, decoded payload)."""
        header = self._read(8)
        _version, msg_type, flags, length = struct.unpack(">BBHI", header)
        body = self._read(length)
        if flags & 0x0004:
            body = zlib.decompress(body)
        return msg_type, flags, msgpack.unpackb(body, raw=False)

    def _read(self, size: int) -> bytes:
        while len(self._buf) < size:
            chunk = self.sock.recv(max(65536, size))
            if not chunk:
                raise ConnectionError("connection closed by the node")
            self._buf += chunk
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def closed(self, timeout: float = 5.0) -> bool:
        """Whether the node closes the connection (reads and drops frames until EOF or timeout)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except TimeoutError:
            return False
        except (ssl.SSLError, OSError):
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawFrameClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
