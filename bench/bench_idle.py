"""Idle-connection memory benchmark (SPEC 13): RSS per authenticated idle device connection.

    .venv/bin/python bench/bench_idle.py [--n 10000] [--baseline-n 2000] [--clients 4]

One server process holds N device connections, each past the TLS handshake and hello, opened by
client processes of their own. The server's RSS growth divided by N is compared with the 60 KiB
target, and with asyncio's built-in TLS server (``loop.create_server(ssl=...)``) answering the
same hello, measured the same way in the same run (with fewer connections: it needs ~5x more).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.crypto import PrivateKey
from chrnode.device.client import connect
from chrnode.edge.frame import FLAG_RESPONSE, VERSION
from chrnode.edge.hello import verify_hello
from chrnode.identity import edge_server_context, load_node_identity
from chrnode.testing.edge import start_node

TARGET_KIB = 60


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


# ---- servers ----------------------------------------------------------------------------------


def serve_node(data_dir: str, n: int, q: mp.Queue, done: mp.Event) -> None:  # type: ignore[type-arg]
    _raise_fd_limit()

    async def main() -> None:
        node = await start_node(
            Path(data_dir),
            max_connections=n + 100,
            conn_rate_per_ip=1e6,
            require_tickets=False,  # idle devices: no ticket traffic during the measurement
            hello_timeout=120.0,
            connection_timeout=120.0,
        )
        await asyncio.sleep(0.5)
        q.put(("ready", node.port, _rss()))
        while node.server.snapshot()["devices"] < n:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # let the last handshakes' temporaries go
        q.put(("loaded", node.server.snapshot()["devices"], _rss()))
        while not done.is_set():
            await asyncio.sleep(0.1)
        await node.stop()

    asyncio.run(main())


class _BaselineHello(asyncio.Protocol):
    """asyncio's TLS transport answering the same hello (for the per-connection baseline)."""

    def __init__(self, node: PrivateKey, counter: list[int]) -> None:
        self.node = node
        self.counter = counter
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) < 8:
            return
        length = struct.unpack(">I", self.buf[4:8])[0]
        if len(self.buf) < 8 + length:
            return
        hello = msgpack.unpackb(self.buf[8 : 8 + length])
        self.buf = b""
        sslobj = self.transport.get_extra_info("ssl_object")
        verify_hello(
            hello["device"], hello["device_sig"], sslobj.get_channel_binding("tls-unique"), self.node.address
        )
        reply = {"id": hello["id"], "node": self.node.address, "version": VERSION, "epoch": 1, "chain_id": 1,
                 "fleet": bytes(20)}  # fmt: skip
        body = msgpack.packb(reply, use_bin_type=True)
        self.transport.write(struct.pack(">BBHI", VERSION, 1, FLAG_RESPONSE, len(body)) + body)  # type: ignore[attr-defined]
        self.counter[0] += 1


def serve_baseline(data_dir: str, n: int, q: mp.Queue, done: mp.Event) -> None:  # type: ignore[type-arg]
    _raise_fd_limit()
    identity = load_node_identity(Path(data_dir))
    counter = [0]

    async def main() -> None:
        ctx = edge_server_context(identity.key_pem_path, identity.cert_path)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _BaselineHello(identity.key, counter), "127.0.0.1", 0, ssl=ctx, backlog=1024
        )
        await asyncio.sleep(0.5)
        q.put(("ready", server.sockets[0].getsockname()[1], _rss()))
        while counter[0] < n:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        q.put(("loaded", counter[0], _rss()))
        while not done.is_set():
            await asyncio.sleep(0.1)
        server.close()

    asyncio.run(main())


# ---- clients ----------------------------------------------------------------------------------


def run_clients(port: int, node: bytes, count: int, q: mp.Queue, done: mp.Event) -> None:  # type: ignore[type-arg]
    _raise_fd_limit()

    async def main() -> None:
        gate = asyncio.Semaphore(64)
        clients = []

        async def one() -> None:
            async with gate:
                for attempt in range(5):
                    try:
                        clients.append(
                            await connect("127.0.0.1", port, PrivateKey.generate(), node, auto_tickets=False)
                        )
                        return
                    except Exception:
                        if attempt == 4:
                            raise
                        await asyncio.sleep(0.5)

        await asyncio.gather(*(one() for _ in range(count)))
        q.put(("clients", len(clients)))
        while not done.is_set():
            await asyncio.sleep(0.2)

    asyncio.run(main())


def measure(kind: str, data_dir: str, n: int, processes: int) -> tuple[float, float]:
    """(KiB of server RSS per connection, seconds to connect them all)."""
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    done = ctx.Event()
    target = serve_node if kind == "node" else serve_baseline
    server = ctx.Process(target=target, args=(data_dir, n, q, done))
    server.start()
    _tag, port, rss_before = q.get(timeout=60)
    node = load_node_identity(Path(data_dir)).address
    started = time.monotonic()
    share = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    clients = [ctx.Process(target=run_clients, args=(port, node, k, q, done)) for k in share]
    for proc in clients:
        proc.start()
    try:
        loaded = None
        while loaded is None:
            message = q.get(timeout=900)
            if message[0] == "loaded":
                loaded = message
        seconds = time.monotonic() - started
        _tag, connections, rss_after = loaded
        return (rss_after - rss_before) / connections / 1024, seconds
    finally:
        done.set()
        for proc in (*clients, server):
            proc.join(20)
            if proc.is_alive():
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="idle device connections to the node (10000)")
    parser.add_argument(
        "--baseline-n", type=int, default=2_000, help="connections to asyncio's TLS server (2000)"
    )
    parser.add_argument("--clients", type=int, default=4, help="client processes (4)")
    args = parser.parse_args()
    _raise_fd_limit()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if args.n + 64 > limit:
        sys.exit(f"--n {args.n} needs more file descriptors than the hard limit {limit}")
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        load_node_identity(Path(tmp))
        node_kib, node_s = measure("node", tmp, args.n, args.clients)
        base_kib, base_s = measure("baseline", tmp, args.baseline_n, args.clients)
    print("idle authenticated device connections, server RSS per connection:")
    print(f"  chr-node (tlsconn)     : {node_kib:7.1f} KiB  ({args.n} connections, {node_s:.0f} s)")
    print(f"  asyncio built-in TLS   : {base_kib:7.1f} KiB  ({args.baseline_n} connections, {base_s:.0f} s)")
    verdict = "OK" if node_kib <= TARGET_KIB else "MISSED"
    saving = base_kib / node_kib
    print(f"  target                 : {TARGET_KIB:7d} KiB  -> {verdict} ({saving:.1f}x less than asyncio)")


if __name__ == "__main__":
    main()
