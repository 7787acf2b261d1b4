"""Handshake benchmark: TLS 1.2 handshakes (ECDHE + ECDSA on secp256k1) plus hello, per second.

    .venv/bin/python bench/bench_handshake.py [--seconds 10] [--clients 2]

Client processes connect, complete TLS and the hello proof (SPEC 3), and disconnect, in a loop,
against an EdgeServer process; the same clients then run against asyncio's built-in TLS server
answering the same hello. Clients share this machine's cores with the server, so the figure is a
floor for the server alone.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_idle import serve_baseline, serve_node
from chrnode.crypto import PrivateKey
from chrnode.identity import load_node_identity
from chrnode.testing.edge import RawFrameClient


def client_loop(port: int, node: bytes, seconds: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    key = PrivateKey.generate()
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with RawFrameClient("127.0.0.1", port) as client:
            client.hello(key, node)
        done += 1
    q.put(done)


def measure(kind: str, data_dir: str, seconds: float, clients: int) -> float:
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    done = ctx.Event()
    target = serve_node if kind == "node" else serve_baseline
    # The server waits for this many hellos before its memory report; more than we will make.
    server = ctx.Process(target=target, args=(data_dir, 500_000, q, done))
    server.start()
    _tag, port, _rss = q.get(timeout=60)
    node = load_node_identity(Path(data_dir)).address
    procs = [ctx.Process(target=client_loop, args=(port, node, seconds, q)) for _ in range(clients)]
    for proc in procs:
        proc.start()
    total = sum(q.get(timeout=seconds + 60) for _ in procs)
    done.set()
    for proc in (*procs, server):
        proc.join(20)
        if proc.is_alive():
            proc.kill()
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hs-") as tmp:
        load_node_identity(Path(tmp))
        node_rate = measure("node", tmp, args.seconds, args.clients)
        base_rate = measure("baseline", tmp, args.seconds, args.clients)
    print(f"TLS 1.2 handshake (ECDHE-ECDSA secp256k1) + hello proof, {args.clients} client processes:")
    print(f"  chr-node (tlsconn)   : {node_rate:7.0f} /s")
    print(f"  asyncio built-in TLS : {base_rate:7.0f} /s   (ratio {node_rate / base_rate:.2f})")


if __name__ == "__main__":
    main()
