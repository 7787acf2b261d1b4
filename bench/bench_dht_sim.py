#!/usr/bin/env python3
"""Kademlia in the discrete-event simulator (chrnode.testing.dhtsim, SPEC 6), in one run:

the event-driven lookup (chrnode.dht.lookup: alpha = 3 in flight, soft timeouts from measured
round trips) against the baseline, a lockstep-round lookup like PyPI `kademlia`'s
(chrnode.dht.lockstep: alpha queries per round, each round waits for all of them), on the same
seeded networks of 1,000 and 10,000 nodes, with no failures, with 25% dead nodes (a request
gets a reset after one round trip) and with 25% silent ones (never answer; the hard timeout,
5 s, ends the request). Tables are filled as in a converged network before nodes fail.

Per lookup: hops, queries (FIND_NODE requests the lookup sent), msgs (all requests in the
network while it ran, probes and cache stores included), success (the live node closest to
the target was found; and, for FIND_VALUE on values stored at the k closest before the
failures, the value was found), simulated latency median and p95. Every figure is the median
over `--runs` seeded networks, with the range [min-max] across them.

    .venv/bin/python bench/bench_dht_sim.py [--sizes 1000,10000] [--lookups 200] [--runs 3]

Simulated time, so figures do not depend on the machine (wall time is printed only as a note).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.dht.ids import ID_BITS, as_id
from chrnode.dht.lockstep import LockstepLookup
from chrnode.dht.lookup import Lookup
from chrnode.dht.node_lookups import LookupFactory
from chrnode.dht.store import Value
from chrnode.testing.dhtsim import DEAD, SILENT, SimNetwork

SCENARIOS = (("no failures", None), ("25% dead", DEAD), ("25% silent", SILENT))
ALGORITHMS: tuple[tuple[str, LookupFactory], ...] = (
    ("event-driven", Lookup),
    ("lockstep (baseline)", LockstepLookup),
)
COLUMNS = ("hops", "queries", "msgs", "success", "value_ok", "median_ms", "p95_ms")


def one_run(
    size: int, seed: int, failed: str | None, factory: LookupFactory, lookups: int
) -> dict[str, float]:
    net = SimNetwork(size, seed=seed, lookup_factory=factory)
    net.populate()
    values = []
    for _ in range(max(1, lookups // 4)):
        key = as_id(net.rng.getrandbits(ID_BITS))
        net.place(Value(key, 1, 1e12, b"object"))
        values.append(key)
    if failed:
        net.fail(0.25, failed)
    live = net.live()
    hops, queries, msgs, latencies, found = [], [], [], [], 0
    for _ in range(lookups):
        origin = net.rng.choice(live)
        target = as_id(net.rng.getrandbits(ID_BITS))
        before = net.messages
        run = net.lookup(origin, target)
        msgs.append(net.messages - before)
        hops.append(run.result.hops)
        queries.append(run.result.queries)
        latencies.append(run.latency)
        [closest] = net.closest_live(target, 1, exclude=origin)
        found += closest in [c.address for c in run.result.closest]
    value_ok = 0
    for key in values:
        value_ok += net.lookup(net.rng.choice(live), key, find_value=True).result.ok
    cuts = statistics.quantiles(latencies, n=20)
    return {
        "hops": statistics.fmean(hops),
        "queries": statistics.fmean(queries),
        "msgs": statistics.fmean(msgs),
        "success": 100.0 * found / lookups,
        "value_ok": 100.0 * value_ok / len(values),
        "median_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * cuts[18],
    }


def cell(samples: list[float], percent: bool = False) -> str:
    mid, lo, hi = statistics.median(samples), min(samples), max(samples)
    unit = "%" if percent else ""
    if lo == hi:
        return f"{mid:.1f}{unit}"
    return f"{mid:.1f}{unit} [{lo:.1f}-{hi:.1f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="network sizes, comma separated")
    parser.add_argument("--lookups", type=int, default=200, help="FIND_NODE lookups per network")
    parser.add_argument("--runs", type=int, default=3, help="seeded networks per figure")
    args = parser.parse_args()
    started = time.perf_counter()
    header = f"{'':<34}" + "".join(f"{c:>24}" for c in COLUMNS)
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"\n{size} nodes, k = 20, alpha = 3, {args.lookups} lookups x {args.runs} runs")
        print(header)
        for label, failed in SCENARIOS:
            for name, factory in ALGORITHMS:
                runs = [
                    one_run(size, seed, failed, factory, args.lookups) for seed in range(1, args.runs + 1)
                ]
                row = "".join(
                    f"{cell([r[c] for r in runs], c in ('success', 'value_ok')):>24}" for c in COLUMNS
                )
                print(f"{label + ', ' + name:<34}{row}", flush=True)
    print(f"\n(wall time {time.perf_counter() - started:.0f} s; figures are simulated time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
