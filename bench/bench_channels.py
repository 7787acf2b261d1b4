"""Channels benchmark: one target feeding N readers through a channel vs through N ordinary ports.

    .venv/bin/python bench/bench_channels.py [--mb 32] [--readers 4 16] [--rounds 3]

The node runs in a process of its own (an EdgeServer on loopback, default channel limits); the
target and the readers are device clients (TLS) in this process. With a channel the target
writes the data once and the node delivers it to every reader; the baseline is what a device
had to do without channels: one port per reader, the target writing the same data on each. Both
move the same bytes to the same readers, the target staying at most WINDOW (4 MiB) ahead of its
slowest reader. Prints, per reader count, the wall time until every reader has everything, the
bytes the target had to upload, and the node's resident memory after the run: median and range
over the rounds, channel and baseline side by side, runs alternating so that other load hits
both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.crypto import PrivateKey
from chrnode.device.client import DeviceClient, Port, PortOffer, connect

CHUNK = 256 * 1024
WINDOW = 4 * 1024 * 1024  # how far the publisher may run ahead of its slowest reader


def _serve(data_dir: str, out: Any, stop: Any) -> None:
    from chrnode.testing.edge import start_node

    async def run() -> None:
        node = await start_node(Path(data_dir))  # the default channel limits
        out.put((node.port, node.address))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await node.stop()

    asyncio.run(run())


async def _accepting(port: int, node: bytes) -> DeviceClient:
    client = await connect("127.0.0.1", port, PrivateKey.generate(), node)

    async def accept(_offer: PortOffer) -> bool:
        return True

    client.on_portopen = accept
    return client


async def _drain(port: Port, size: int, got: list[int], index: int) -> None:
    while got[index] < size:
        chunk = await port.read()
        if not chunk:
            raise RuntimeError(f"port {port.ref} ended after {got[index]} of {size} bytes")
        got[index] += len(chunk)


async def _run(port: int, node: bytes, readers: int, size: int, shared: bool) -> tuple[float, int]:
    target = await _accepting(port, node)
    target.shared_ports.add("feed")
    clients = [await connect("127.0.0.1", port, PrivateKey.generate(), node) for _ in range(readers)]
    try:
        ports, outs = [], []
        for client in clients:
            ports.append(await client.open_port(target.address, "feed", "rs" if shared else "r"))
            if not shared or not outs:
                outs.append(await target.accept())
        data = os.urandom(CHUNK)
        got = [0] * readers
        began = time.perf_counter()

        async def feed() -> None:
            # A publisher at most WINDOW ahead of its slowest reader (as one pacing a live feed
            # by its readers' acknowledgements would be): the readers here share one process
            # with it, so an unpaced one would outrun them all and see them closed too_slow.
            for sent in range(CHUNK, size + 1, CHUNK):
                while sent - min(got) > WINDOW:
                    await asyncio.sleep(0.001)
                for out in outs:
                    await out.write(data)

        await asyncio.gather(feed(), *(_drain(p, size, got, i) for i, p in enumerate(ports)))
        elapsed = time.perf_counter() - began
        return elapsed, len(outs) * size
    finally:
        await asyncio.gather(target.close(), *(c.close() for c in clients))


def _figures(values: list[float]) -> str:
    return f"median {statistics.median(values):7.2f}  range {min(values):7.2f} .. {max(values):7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=32, help="MiB every reader receives per run (default 32)")
    parser.add_argument(
        "--readers", type=int, nargs="+", default=[4, 16], help="reader counts (default 4 16)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each kind (default 3)")
    args = parser.parse_args()
    size = args.mb * 1024 * 1024 // CHUNK * CHUNK
    ctx = mp.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    with tempfile.TemporaryDirectory() as tmp:
        server = ctx.Process(target=_serve, args=(tmp, out, stop), daemon=True)
        server.start()
        try:
            port, node = out.get(timeout=60)
            proc = psutil.Process(server.pid)
            print(f"{args.mb} MiB to each reader, {args.rounds} rounds; node pid {server.pid}")
            for readers in args.readers:
                results: dict[bool, list[tuple[float, int, int]]] = {True: [], False: []}
                for _ in range(args.rounds):
                    for shared in (True, False):
                        elapsed, uploaded = asyncio.run(_run(port, node, readers, size, shared))
                        results[shared].append((elapsed, uploaded, proc.memory_info().rss))
                print(f"\n{readers} readers")
                for shared, label in ((True, "channel "), (False, "baseline")):
                    rows = results[shared]
                    seconds = [r[0] for r in rows]
                    rate = [readers * size / r[0] / 1e6 for r in rows]
                    print(f"  {label}: delivered MB/s {_figures(rate)}   seconds {_figures(seconds)}")
                    print(
                        f"            target uploaded {rows[0][1] / 2**20:.0f} MiB; "
                        f"node RSS {_figures([r[2] / 2**20 for r in rows])} MiB"
                    )
                ratio = statistics.median(r[0] for r in results[False]) / statistics.median(
                    r[0] for r in results[True]
                )
                print(f"  channel vs baseline: {ratio:.2f}x faster (median wall time)")
        finally:
            stop.set()
            server.join(30)


if __name__ == "__main__":
    main()
