"""Cross-node relay (SPEC 13): device -> node -> node -> device against the single-node relay.

    .venv/bin/python bench/bench_relay_net.py [--mb 200] [--frame-kib 256] [--rtt 2000] [--rounds 3]

Two nodes in processes of their own (an EdgeServer each, joined over the peer port: TLS 1.2 on
secp256k1, the DHT, the relay); the receiving device connects to node B, whose ticket hook
publishes its location; the sending device connects to node A and opens a port to it by address
(A finds the location in the DHT and relays over its link to B). The same client programs as
bench_relay.py measure throughput and the small-message round trip; the single-node relay runs
in the same session, alternating, as the baseline. Targets: throughput >= 0.8x, round trip <=
1.5x the single-node relay's. Prints every run, the median and the range.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_relay import _reap, bench_node, measure_relay

from chrnode.dht.ids import Contact
from chrnode.edge.hooks import DefaultHooks
from chrnode.identity import load_node_identity
from chrnode.objects.kinds import make_location
from chrnode.testing.netnodes import NetNode, start_net_node
from chrnode.ticket import Ticket

Queue = Any


class PublishingHooks(DefaultHooks):
    """DefaultHooks whose accepted tickets publish the device's location (as the node does)."""

    node: NetNode | None = None
    published: set[bytes] = set()

    async def store_ticket(self, ticket: Ticket, device: bytes) -> None:
        await super().store_ticket(ticket, device)
        node = self.node
        if node is not None and device not in self.published:
            self.published.add(device)
            now = time.time()
            obj = make_location(node.key, ticket, seq=int(now * 1000), expires=int(now) + 600)
            await node.dht.publish(obj)


def run_net_node(data_dir: str, index: int, seed: tuple[bytes, int] | None, port_q: Queue, stop: Any) -> None:
    async def serve() -> None:
        hooks = PublishingHooks(epoch=1000)
        node = await start_net_node(Path(data_dir), index, hooks=hooks, connection_timeout=30.0)
        hooks.node = node
        if seed is not None:
            result = await node.dht.join([Contact(seed[0], "127.0.0.1", seed[1])])
            assert result.ok, "node B could not join node A"
        port_q.put((node.edge.port, node.key.address, node.record.data["peer_port"]))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await node.stop()

    asyncio.run(serve())


def bench_two_nodes(base: str, total_mb: int, frame_kib: int, rtt: int) -> tuple[float, list[float]]:
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    port_q: Queue = ctx.Queue()
    a_proc = ctx.Process(target=run_net_node, args=(f"{base}/a", 0, None, port_q, stop))
    a_proc.start()
    a_port, a_addr, a_peer = port_q.get(timeout=60)
    b_proc = ctx.Process(target=run_net_node, args=(f"{base}/b", 1, (a_addr, a_peer), port_q, stop))
    b_proc.start()
    b_port, b_addr, _ = port_q.get(timeout=60)
    try:
        return measure_relay((b_port, b_addr), (a_port, a_addr), total_mb, frame_kib, rtt)
    finally:
        stop.set()
        _reap(a_proc, b_proc)


def _spread(values: list[float], unit: str, scale: float = 1.0) -> str:
    shown = [v * scale for v in values]
    return f"median {statistics.median(shown):.1f} {unit} (range {min(shown):.1f}-{max(shown):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=200, help="megabytes per run (default 200)")
    parser.add_argument("--frame-kib", type=int, default=256, help="port data per frame, KiB (default 256)")
    parser.add_argument("--rtt", type=int, default=2000, help="small-message round trips (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each (default 3)")
    args = parser.parse_args()
    one: list[tuple[float, list[float]]] = []
    two: list[tuple[float, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-relay-net-") as tmp:
        load_node_identity(Path(tmp) / "single")
        for i in range(args.rounds):
            one.append(bench_node(f"{tmp}/single", args.mb, args.frame_kib, args.rtt))
            two.append(bench_two_nodes(f"{tmp}/pair{i}", args.mb, args.frame_kib, args.rtt))
            print(
                f"  round {i + 1}: single node {one[-1][0]:.1f} MB/s, "
                f"rtt {statistics.median(one[-1][1]) * 1e6:.1f} us; two nodes {two[-1][0]:.1f} MB/s, "
                f"rtt {statistics.median(two[-1][1]) * 1e6:.1f} us",
                flush=True,
            )
    tput_ratios = [t[0] / o[0] for o, t in zip(one, two, strict=True)]
    rtt_ratios = [statistics.median(t[1]) / statistics.median(o[1]) for o, t in zip(one, two, strict=True)]
    rounds = f"{args.rounds} alternating rounds"
    print(f"relay across two nodes, {args.mb} MB in {args.frame_kib} KiB frames, {rounds}:")
    print(f"  single node (baseline): {_spread([o[0] for o in one], 'MB/s')}")
    print(f"  two nodes             : {_spread([t[0] for t in two], 'MB/s')}")
    tr = statistics.median(tput_ratios)
    print(f"  ratio                 : median {tr:.2f} (range {min(tput_ratios):.2f}-{max(tput_ratios):.2f}; "
          f"target >= 0.80: {'OK' if tr >= 0.8 else 'MISSED'})")  # fmt: skip
    print(f"small-message round trip (64 B, median of {args.rtt} per run):")
    print(f"  single node (baseline): {_spread([statistics.median(o[1]) for o in one], 'us', 1e6)}")
    print(f"  two nodes             : {_spread([statistics.median(t[1]) for t in two], 'us', 1e6)}")
    rr = statistics.median(rtt_ratios)
    print(f"  ratio                 : median {rr:.2f} (range {min(rtt_ratios):.2f}-{max(rtt_ratios):.2f}; "
          f"target <= 1.50: {'OK' if rr <= 1.5 else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
