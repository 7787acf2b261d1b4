"""Cross-node relay (SPEC 13): device -> node -> node -> device against the single-node relay.

    .venv/bin/python bench/bench_relay_net.py [--mb 200] [--frame-kib 256] [--rtt 2000] [--rounds 5]

Two nodes in processes of their own (an EdgeServer each, joined over the peer port: TLS 1.2 on
secp256k1, the DHT, the relay); the receiving device connects to node B, whose ticket hook
publishes its location; the sending device connects to node A and opens a port to it by address
(A finds the location in the DHT and relays over its link to B). The same client programs as
bench_relay.py measure throughput and the small-message round trip. Targets: throughput >= 0.8x,
round trip <= 1.5x the single-node relay's.

Every round runs, in the same session and in turn (the order rotates from round to round, so
that a change of load on the machine does not always hit the same one):

- the single-node relay (the baseline of the targets),
- the two-node relay,
- socat relaying TLS -> TLS, one hop and a chain of two hops: the same topologies relayed by a C
  program, i.e. what one more TLS hop costs on this machine whatever relays it.

Prints every round, then the median and range over the rounds of each figure and of the per-round
ratios. Round trips are given as the median of each run and as its 10th percentile (the floor:
the path's own cost, least disturbed by other processes on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_relay import _reap, bench_node, bench_socat, measure_relay

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
    return f"median {statistics.median(shown):7.1f} {unit} (range {min(shown):.1f}-{max(shown):.1f})"


def _ratio(values: list[float], target: str, ok: bool | None = None) -> str:
    text = f"median {statistics.median(values):.2f} (range {min(values):.2f}-{max(values):.2f})"
    if ok is None:
        return text
    return f"{text}; target {target}: {'OK' if ok else 'MISSED'}"


def _floor(rtts: list[float]) -> float:
    return statistics.quantiles(rtts, n=10)[0]


Run = tuple[float, list[float]]
KINDS = ("single node", "two nodes", "socat 1 hop", "socat 2 hops")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=200, help="megabytes per run (default 200)")
    parser.add_argument("--frame-kib", type=int, default=256, help="port data per frame, KiB (default 256)")
    parser.add_argument("--rtt", type=int, default=2000, help="small-message round trips (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every relay (default 5)")
    parser.add_argument("--socat-buffer", type=int, default=65536, help="socat -b block size (default 65536)")
    parser.add_argument("--no-socat", action="store_true", help="leave out the socat relays")
    args = parser.parse_args()
    socat = not args.no_socat
    if socat and shutil.which("socat") is None:
        sys.exit("socat is not installed (apt-get install -y socat), or pass --no-socat")
    kinds = KINDS if socat else KINDS[:2]
    runs: dict[str, list[Run]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="bench-relay-net-") as tmp:
        load_node_identity(Path(tmp) / "single")
        bench = {
            "single node": lambda i: bench_node(f"{tmp}/single", args.mb, args.frame_kib, args.rtt),
            "two nodes": lambda i: bench_two_nodes(f"{tmp}/pair{i}", args.mb, args.frame_kib, args.rtt),
            "socat 1 hop": lambda i: bench_socat(tmp, args.mb, args.frame_kib, args.rtt, args.socat_buffer),
            "socat 2 hops": lambda i: bench_socat(
                tmp, args.mb, args.frame_kib, args.rtt, args.socat_buffer, hops=2
            ),
        }
        for i in range(args.rounds):
            order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]
            for kind in order:
                runs[kind].append(bench[kind](i))
            shown = ", ".join(
                f"{kind} {runs[kind][-1][0]:.0f} MB/s {statistics.median(runs[kind][-1][1]) * 1e6:.0f} us"
                for kind in kinds
            )
            print(f"  round {i + 1}: {shown}", flush=True)
    _report(args, kinds, runs)


def _report(args: argparse.Namespace, kinds: tuple[str, ...], runs: dict[str, list[Run]]) -> None:
    def ratios(top: str, bottom: str, figure: Any) -> list[float]:
        return [figure(t) / figure(b) for t, b in zip(runs[top], runs[bottom], strict=True)]

    def mbs(run: Run) -> float:
        return run[0]

    def median_rtt(run: Run) -> float:
        return statistics.median(run[1])

    def floor_rtt(run: Run) -> float:
        return _floor(run[1])

    print(f"throughput, {args.mb} MB in {args.frame_kib} KiB frames, {args.rounds} rounds:")
    for kind in kinds:
        print(f"  {kind:13s}: {_spread([r[0] for r in runs[kind]], 'MB/s')}")
    tput = ratios("two nodes", "single node", mbs)
    print(f"  two nodes / single node : {_ratio(tput, '>= 0.80', statistics.median(tput) >= 0.8)}")
    if "socat 2 hops" in kinds:
        print(f"  socat 2 hops / 1 hop    : {_ratio(ratios('socat 2 hops', 'socat 1 hop', mbs), '')}")
        print(f"  single node / socat     : {_ratio(ratios('single node', 'socat 1 hop', mbs), '')}")
    print(f"small-message round trip (64 B, {args.rtt} per run; median of the run / its 10th percentile):")
    for kind in kinds:
        med = _spread([median_rtt(r) for r in runs[kind]], "us", 1e6)
        low = _spread([floor_rtt(r) for r in runs[kind]], "us", 1e6)
        print(f"  {kind:13s}: {med}; p10 {low}")
    rtt = ratios("two nodes", "single node", median_rtt)
    print(f"  two nodes / single node : {_ratio(rtt, '<= 1.50', statistics.median(rtt) <= 1.5)}")
    print(f"    at the p10 floor      : {_ratio(ratios('two nodes', 'single node', floor_rtt), '')}")
    if "socat 2 hops" in kinds:
        print(f"  socat 2 hops / 1 hop    : {_ratio(ratios('socat 2 hops', 'socat 1 hop', median_rtt), '')}")
        print(f"    at the p10 floor      : {_ratio(ratios('socat 2 hops', 'socat 1 hop', floor_rtt), '')}")


if __name__ == "__main__":
    main()
