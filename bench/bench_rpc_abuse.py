"""chr_node_info under slow RPC bodies (issue 8): latency with 500 trickling bodies vs an idle node.

    .venv/bin/python bench/bench_rpc_abuse.py [--runs 3] [--bodies 500] [--polls 200] [--interval 15]
        [--attack-seconds 35]

A real `chr-node start` with the default limits (rpc_max_connections 1000, rpc_body_timeout 30 s).
Each run measures, on the same node, ``--polls`` chr_node_info calls, each on a new connection:

- baseline: on the idle node;
- attack: while an attacker process keeps ``--bodies`` POST /rpc requests open whose 1000-byte
  body arrives one byte every ``--interval`` seconds (each is cut at the body timeout and opened
  again); polls go on for ``--attack-seconds``, past the first wave's cut.

It prints median and p99 per run and as median [range] over the runs, the p99 ratio attack/idle,
and whether any actor restarted (pid or restart count changed) during the whole bench.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.testing.abuse import SlowBodies
from chrnode.testing.node import NodeProcess

BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "chr_node_info"}).encode()


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def attacker(port: int, bodies: int, interval: float, ready: Any, stop: Any, out: Any) -> None:
    _raise_fd_limit()
    slow = SlowBodies("127.0.0.1", port, count=bodies, interval=interval)
    slow.start(ready_timeout=120)
    ready.set()
    stop.wait()
    out.put({"opened": slow.opened, "closed_by_node": slow.closed_by_node, "open": slow.open_now})
    slow.stop()


def polls(port: int, count: int, seconds: float = 0.0) -> list[float]:
    """``count`` calls, and more until ``seconds`` have passed, each on a new connection."""
    times: list[float] = []
    until = time.monotonic() + seconds
    while len(times) < count or time.monotonic() < until:
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/rpc", BODY, {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and b'"address"' in response.read()
        conn.close()
        times.append(time.perf_counter() - started)
        time.sleep(0.005)
    return times


def tree(node: NodeProcess) -> dict[str, tuple[int, int]]:
    return {a["name"]: (a["pid"], a["restarts"]) for a in node.rpc("chr_node_info")["tree"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bodies", type=int, default=500)
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--attack-seconds", type=float, default=35.0)
    args = parser.parse_args()
    _raise_fd_limit()
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess(Path(tmp) / "data", CHR_LOG_LEVEL="warning")
        node.start()
        try:
            before = tree(node)
            ctx = mp.get_context("spawn")
            for run in range(1, args.runs + 1):
                idle = polls(node.rpc_port, args.polls)
                ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
                proc = ctx.Process(
                    target=attacker, args=(node.rpc_port, args.bodies, args.interval, ready, stop, out)
                )
                proc.start()
                if not ready.wait(180):
                    raise SystemExit("the attacker could not open its connections")
                time.sleep(1.0)
                # Long enough for the body timeout (30 s) to cut the first wave and the attacker
                # to open it again while we measure.
                attacked = polls(node.rpc_port, args.polls, args.attack_seconds)
                stop.set()
                slow = out.get(timeout=60)
                proc.join(30)
                row = {
                    "idle_median": statistics.median(idle),
                    "idle_p99": _p99(idle),
                    "attack_median": statistics.median(attacked),
                    "attack_p99": _p99(attacked),
                }
                results.append(row)
                print(
                    f"run {run}: idle node median {row['idle_median'] * 1000:.2f} ms p99 "
                    f"{row['idle_p99'] * 1000:.2f} ms | {args.bodies} slow bodies: median "
                    f"{row['attack_median'] * 1000:.2f} ms p99 {row['attack_p99'] * 1000:.2f} ms | "
                    f"attacker opened {slow['opened']}, {slow['closed_by_node']} closed by the node",
                    flush=True,
                )
                time.sleep(1.0)
            after = tree(node)
        finally:
            node.stop()
    restarted = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}

    def summary(key: str) -> str:
        values = [r[key] * 1000 for r in results]
        return f"{statistics.median(values):.2f} ms [{min(values):.2f}-{max(values):.2f}]"

    print(f"chr_node_info on a new connection, {args.runs} runs, median [range] of the per-run figures:")
    print(f"  baseline, idle node:      median {summary('idle_median')}, p99 {summary('idle_p99')}")
    print(
        f"  under {args.bodies} slow bodies:  median {summary('attack_median')}, p99 {summary('attack_p99')}"
    )
    ratios = [r["attack_p99"] / r["idle_p99"] for r in results]
    print(
        f"  p99 ratio attack/idle: median {statistics.median(ratios):.2f} "
        f"[{min(ratios):.2f}-{max(ratios):.2f}]"
    )
    print(f"actors restarted: {restarted or 'none'}")
    return 1 if restarted else 0


if __name__ == "__main__":
    raise SystemExit(main())
