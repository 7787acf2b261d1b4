#!/usr/bin/env python3
"""Benchmark the chain cache tiers (SPEC 7, issue #4) against a local anvil, in one run:

- BNS resolutions per second through ChainService from L1, from L2 (SQLite, L1 emptied before
  each lookup) and uncached (every lookup goes to the chain), against raw `eth_call`s of
  BnsRegistry.resolve through RemoteRpc: the baseline;
- ticket validations per second (TicketValidator, SPEC 5 steps 1-6) with warm caches, with the
  chain hooks (ChainFleetCheck, ChainPaymentCheck on a fleet that requires payment), against the
  same validator with the allow-all hooks (signature recovery alone).

    .venv/bin/python bench/bench_cache.py [--seconds 2]

Needs `npm ci` (anvil from node_modules). Figures compare runs on one machine; nothing asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.chain.cache import TieredCache
from chrnode.chain.contracts import Bns
from chrnode.chain.payments import ChainPaymentCheck, PaymentLedger
from chrnode.chain.rpc import RemoteRpc
from chrnode.chain.service import ChainContracts, ChainFleetCheck, ChainService
from chrnode.testing.anvil import DEV_CHAIN_ID, anvil_session
from chrnode.testing.chain import ChainWorld, DirectL2
from chrnode.ticket import TicketValidator

NAME, NAMESPACE = "bench.chronara.com", "com:bench"
PRICE = 2


def measure(
    label: str, seconds: float, operation: Callable[[], object], baseline: float | None = None
) -> float:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        operation()
        latencies.append(time.perf_counter() - started)
    rate = len(latencies) / sum(latencies)
    cuts = statistics.quantiles(latencies, n=100)
    ratio = f"  {rate / baseline:>7.1f} x baseline" if baseline else ""
    print(
        f"{label:<40} {rate:>10.0f} ops/s   p50 {cuts[49] * 1e6:>8.1f} us   "
        f"p99 {cuts[98] * 1e6:>8.1f} us{ratio}"
    )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    args = parser.parse_args()
    seconds = args.seconds
    with anvil_session() as chain, tempfile.TemporaryDirectory() as tmp:
        world = ChainWorld.build(chain, price_per_byte=PRICE, requires_payment=True)
        world.register(NAMESPACE, (b"\x01" * 20, b"\x02" * 20))
        contracts = ChainContracts.from_deployment(chain.deployment)
        l2 = DirectL2(Path(tmp) / "chr-node.sqlite")
        with RemoteRpc([chain.rpc_url], DEV_CHAIN_ID, timeout=5.0) as rpc:
            bns = Bns(rpc, contracts.require("bns"))
            call = bns.abi.encode_call("resolve", NAMESPACE)
            print("BNS resolution (SPEC 7)")
            base = measure("raw eth_call (baseline)", seconds, lambda: rpc.eth_call(bns.address, call))

            uncached = ChainService(rpc, contracts, TieredCache(1000))

            def miss() -> object:
                uncached.cache.clear_memory()
                return uncached.bns_resolve(NAME)

            measure("ChainService, uncached (L3 every time)", seconds, miss, base)
            tiered = ChainService(rpc, contracts, TieredCache(1000, l2))
            tiered.bns_resolve(NAME)  # into L1 and L2

            def from_l2() -> object:
                tiered.cache.clear_memory()
                return tiered.bns_resolve(NAME)

            measure("ChainService, from L2 (SQLite)", seconds, from_l2, base)
            assert tiered.cache.stats()["hits"]["l2"] > 0
            measure("ChainService, from L1 (memory)", seconds, lambda: tiered.bns_resolve(NAME), base)

            print("\nticket validation, warm caches (SPEC 5 steps 1-6)")
            proof = world.pay(world.fleet_address, PRICE * 1000)
            ticket = world.ticket(total_bytes=1000, payment_proof=proof)
            device, epoch = world.device.address, world.epoch
            plain = TicketValidator(world.node.address, DEV_CHAIN_ID)
            base = measure(
                "allow-all hooks (signature only)", seconds, lambda: plain.validate(ticket, device, epoch)
            )
            service = ChainService(rpc, contracts, TieredCache(1000, l2))
            hooked = TicketValidator(
                world.node.address,
                DEV_CHAIN_ID,
                fleet_check=ChainFleetCheck(service),
                payment_check=ChainPaymentCheck(service, PaymentLedger(l2)),
            )
            hooked.validate(ticket, device, epoch)  # warm: fleet allowlists, terms, payment facts
            measure(
                "chain fleet + payment checks", seconds, lambda: hooked.validate(ticket, device, epoch), base
            )
            stats = service.cache.stats()
            print(f"  cache after the run: {stats['hits']} requests={stats['requests']}")
        l2.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
