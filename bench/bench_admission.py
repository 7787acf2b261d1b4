"""Honest devices under a slowloris (issue 8, SPEC 13): time to hello with 1,000 idle pre-TLS sockets.

    .venv/bin/python bench/bench_admission.py [--runs 3] [--sockets 1000] [--sources 10] [--hellos 50]

A real `chr-node start` with the default limits (max_connections 1000, 64 per address, 256 per
/24, handshake_deadline 5 s). Each run measures, on the same node:

- baseline: ``--hellos`` honest devices connect one after another (TCP, TLS 1.2, hello answered)
  on the idle node;
- attack: an attacker process keeps ``--sockets`` TCP connections open from ``--sources``
  addresses on 127.0.0.0/24 that never start TLS (reopening every one the node closes), and the
  same number of honest devices connect (from 127.0.0.1, the attackers' own /24).

It prints median and p99 time to hello for both, per run and as median [range] over the runs;
the target is p99 under 1 s under attack. Also how many sockets the node closed (shed or cut at
the deadline) and that no actor restarted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.crypto import PrivateKey, parse_address
from chrnode.device.client import connect
from chrnode.testing.abuse import Slowloris
from chrnode.testing.node import NodeProcess

TARGET_P99 = 1.0


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def attacker(port: int, sockets: int, sources: list[str], ready: Any, stop: Any, out: Any) -> None:
    _raise_fd_limit()
    flood = Slowloris("127.0.0.1", port, sources=sources, count=sockets)
    flood.start(ready_timeout=120)
    ready.set()
    stop.wait()
    out.put({"opened": flood.opened, "closed_by_node": flood.closed_by_node, "open": flood.open_now})
    flood.stop()


async def hellos(port: int, node: bytes, count: int) -> list[float]:
    times = []
    for _ in range(count):
        key = PrivateKey.generate()
        started = time.perf_counter()
        device = await connect("127.0.0.1", port, key, expect_node=node, auto_tickets=False)
        times.append(time.perf_counter() - started)
        await device.close()
        await asyncio.sleep(0.05)
    return times


def tree(node: NodeProcess) -> dict[str, tuple[int, int]]:
    return {a["name"]: (a["pid"], a["restarts"]) for a in node.rpc("chr_node_info")["tree"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--hellos", type=int, default=50)
    args = parser.parse_args()
    _raise_fd_limit()
    sources = [f"127.0.0.{2 + i}" for i in range(args.sources)]
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess(Path(tmp) / "data", CHR_LOG_LEVEL="warning")
        node.start()
        try:
            info = node.rpc("chr_node_info")
            port = info["ports"]["edge2"][0]
            address = parse_address(info["address"])
            before = tree(node)
            ctx = mp.get_context("spawn")
            for run in range(1, args.runs + 1):
                idle = asyncio.run(hellos(port, address, args.hellos))
                ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
                proc = ctx.Process(target=attacker, args=(port, args.sockets, sources, ready, stop, out))
                proc.start()
                if not ready.wait(180):
                    raise SystemExit("the attacker could not open its sockets")
                # TCP_DEFER_ACCEPT holds silent sockets in the kernel for handshake_deadline (5 s);
                # wait past it so the node itself holds, sheds and cuts them while we measure.
                time.sleep(8.0)
                attacked = asyncio.run(hellos(port, address, args.hellos))
                stop.set()
                flood = out.get(timeout=60)
                proc.join(30)
                row = {
                    "idle_median": statistics.median(idle),
                    "idle_p99": _p99(idle),
                    "attack_median": statistics.median(attacked),
                    "attack_p99": _p99(attacked),
                }
                results.append(row)
                print(
                    f"run {run}: idle node median {row['idle_median'] * 1000:.1f} ms p99 "
                    f"{row['idle_p99'] * 1000:.1f} ms | {args.sockets} idle pre-TLS sockets from "
                    f"{args.sources} addresses: median {row['attack_median'] * 1000:.1f} ms p99 "
                    f"{row['attack_p99'] * 1000:.1f} ms | attacker opened {flood['opened']}, "
                    f"{flood['closed_by_node']} closed by the node, {flood['open']} open at the end",
                    flush=True,
                )
                time.sleep(6)  # what the attack left leaves the node (deadline 5 s) before the next run
            after = tree(node)
            restarted = after != before
            if restarted:
                changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
                print(f"actors changed (pid, restarts) before -> after: {changed}")
        finally:
            node.stop()

    def summary(key: str) -> str:
        values = [r[key] * 1000 for r in results]
        return f"{statistics.median(values):.1f} ms [{min(values):.1f}-{max(values):.1f}]"

    print(f"time to hello over {args.runs} runs, median [range] of the per-run figures:")
    print(f"  baseline, idle node:  median {summary('idle_median')}, p99 {summary('idle_p99')}")
    print(f"  under the slowloris:  median {summary('attack_median')}, p99 {summary('attack_p99')}")
    worst = max(r["attack_p99"] for r in results)
    ok = worst < TARGET_P99 and not restarted
    print(
        f"target p99 < {TARGET_P99:g} s under attack: {'met' if worst < TARGET_P99 else 'MISSED'} "
        f"(worst p99 {worst * 1000:.1f} ms); actors restarted: {'yes' if restarted else 'none'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
