#!/usr/bin/env python3
"""Benchmark BNS resolution (SPEC 7): name parsing alone, and a full resolve through RemoteRpc
(keep-alive HTTP JSON-RPC, eth_call, ABI decoding) against a local anvil.

    .venv/bin/python bench/bench_bns.py [--seconds 3]

Needs `npm ci` (anvil from node_modules). Prints operations per second and latency percentiles;
the figures are for comparison between runs on the same machine, not timed assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.chain.bns import parse_name
from chrnode.chain.contracts import Bns
from chrnode.testing.anvil import DEPLOYER, anvil_session


def measure(label: str, seconds: float, operation: Callable[[], object]) -> None:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        operation()
        latencies.append(time.perf_counter() - started)
    total = sum(latencies)
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"{label:<34} {len(latencies) / total:>10.0f} ops/s   "
        f"p50 {cuts[49] * 1e6:>8.1f} us   p99 {cuts[98] * 1e6:>8.1f} us   (n={len(latencies)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    args = parser.parse_args()
    measure("parse_name", args.seconds, lambda: parse_name("mysite.chronara.com"))
    with anvil_session() as chain:
        bns = Bns(chain.rpc, chain.contracts["bns"])
        devices = [bytes([i]) * 20 for i in range(1, 4)]
        bns.register(DEPLOYER, "com:mysite", devices, chain.block_timestamp() + 86400)
        measure("eth_blockNumber (RPC floor)", args.seconds, chain.rpc.block_number)
        measure(
            "Bns.resolve_name (registered)", args.seconds, lambda: bns.resolve_name("mysite.chronara.com")
        )
        measure("Bns.resolve_name (unknown)", args.seconds, lambda: bns.resolve_name("nobody.chronara.com"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
