"""DHT over the real peer protocol (SPEC 4/6, 13): 200 nodes on loopback, against PyPI `kademlia`.

Each implementation runs 200 nodes in 4 worker processes of 50 (TLS peer links on loopback for
chr-node, UDP for `kademlia`). Every node joins through one seed (bootstrap time), 100 values are
published, then 1,000 value lookups (FIND_VALUE / `get`) run from the live workers: success, hops
(chr-node only), median and p95 latency. Then the fourth worker is SIGKILLed (25% dead: its
connections reset) and another 1,000 lookups run; a fresh network repeats that with the fourth
worker SIGSTOPped (25% silent: no answer at all). Both implementations use k = 20, alpha = 3 and
a 5 s request timeout (kademlia's default).

    .venv/bin/python bench/bench_dht_net.py [--nodes 200] [--lookups 1000] [--runs 3] [--workers 4]
                                            [--max-links 512] [--no-refresh-on-join] [--only chr|kademlia]

For chr-node it also prints the dials per lookup (each one a TLS handshake and a peer hello),
links closed at the pool's cap, and links held per node. The summary gives each figure's median
and range over the runs.

The baseline `kademlia` comes with the `bench` extra (tools/bootstrap installs it); the bench skips
it with a note when it is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import random
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.crypto import PrivateKey
from chrnode.dht.ids import Contact
from chrnode.dht.node import DhtConfig
from chrnode.net.peers import PeerNetworkConfig
from chrnode.objects.kinds import make_location
from chrnode.objects.signed import SignedObject
from chrnode.peer.pool import PoolConfig
from chrnode.testing.peers import start_peer_nodes
from chrnode.ticket import Ticket

WORKERS = 4
MAX_LINKS = PoolConfig().max_links  # the node's default cap (config peer_max_links)
REFRESH_ON_JOIN = DhtConfig().refresh_on_join
TIMEOUT = 5.0
CONCURRENCY = 16  # lookups in flight per worker
JOINS = 2  # joins in flight per worker (200 nodes joining within seconds is already a storm)


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---- chr-node worker ------------------------------------------------------------------------------
async def _chr_worker(index: int, per: int, conn: Any, base: Path) -> None:
    config = DhtConfig(hard_timeout=TIMEOUT, refresh_on_join=REFRESH_ON_JOIN)
    # Every node of the bench dials from 127.0.0.1: the per-address accept rate is for real networks.
    net = PeerNetworkConfig(accepts_per_second_per_ip=10_000.0, pool=PoolConfig(max_links=MAX_LINKS))
    nodes = await start_peer_nodes(
        base / f"w{index}", per, dht_config=config, net_config=net, first_key=1 + index * per
    )
    loop = asyncio.get_running_loop()
    conn.send([(n.key.address, n.contact.peer_port) for n in nodes])
    rng = random.Random(index)
    while True:
        cmd, arg = await loop.run_in_executor(None, conn.recv)
        if cmd == "join":
            address, port = arg
            seed = Contact(address, "127.0.0.1", port)
            sem = asyncio.Semaphore(JOINS)

            async def join(node: Any, sem: asyncio.Semaphore, seed: Contact) -> bool:
                async with sem:
                    if node.key.address == seed.address:
                        return True
                    return bool((await node.dht.join([seed])).ok)

            conn.send(sum(await asyncio.gather(*(join(n, sem, seed) for n in nodes))))
        elif cmd == "publish":
            keys = []
            for i, node in enumerate(nodes[:arg]):
                device = PrivateKey.from_bytes((10_000 + index * per + i).to_bytes(32, "big"))
                ticket = Ticket(31337, 694, node.key.address, b"\x60" * 20, 1, 1000).sign(device)
                now = int(time.time())
                obj: SignedObject = make_location(node.key, ticket, seq=now * 1000, expires=now + 3600)
                await node.dht.publish(obj)
                keys.append(device.address)
            conn.send(keys)
        elif cmd == "lookups":
            keys, count = arg
            sem = asyncio.Semaphore(CONCURRENCY)

            async def one(key: bytes, sem: asyncio.Semaphore) -> tuple[bool, int, float]:
                async with sem:
                    # From a node that does not hold the value itself (else the lookup is free).
                    now = time.time()
                    askers = [n for n in nodes if n.dht.node.store.get(key, now) is None] or nodes
                    node = rng.choice(askers)
                    start = time.perf_counter()
                    result = await node.dht.lookup(key, find_value=True)
                    return result.value is not None, result.hops, time.perf_counter() - start

            conn.send(await asyncio.gather(*(one(rng.choice(keys), sem) for _ in range(count))))
        elif cmd == "stats":
            conn.send(
                {
                    "dials": sum(n.network.dials for n in nodes),
                    "evictions": sum(n.network.pool.evictions for n in nodes),
                    "links": sum(len(n.network.links) for n in nodes),
                    "table": sum(len(n.dht.node.table) for n in nodes),
                    "requests": sum(n.dht.node.counters["requests_sent"] for n in nodes),
                    "probes": sum(n.dht.node.counters["probes_sent"] for n in nodes),
                    "nodes": len(nodes),
                    "rss": _rss(),
                    "cpu": time.process_time(),
                }
            )
        elif cmd == "stop":
            for node in nodes:
                await node.stop()
            conn.send("stopped")
            return


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- kademlia worker ------------------------------------------------------------------------------
async def _kad_worker(index: int, per: int, conn: Any, base: Path) -> None:
    import logging

    from kademlia.network import Server
    from kademlia.utils import digest

    for name in ("kademlia", "rpcudp"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    loop = asyncio.get_running_loop()
    servers = []
    for _ in range(per):
        server = Server(ksize=20, alpha=3)
        await server.listen(0, interface="127.0.0.1")
        servers.append(server)
    conn.send([(b"", s.transport.get_extra_info("sockname")[1]) for s in servers])
    rng = random.Random(index)
    while True:
        cmd, arg = await loop.run_in_executor(None, conn.recv)
        if cmd == "join":
            _, port = arg
            sem = asyncio.Semaphore(JOINS)

            async def kjoin(server: Any, sem: asyncio.Semaphore, port: int) -> bool:
                async with sem:
                    if server.transport.get_extra_info("sockname")[1] == port:
                        return True
                    return bool(await server.bootstrap([("127.0.0.1", port)]))

            conn.send(sum(await asyncio.gather(*(kjoin(s, sem, port) for s in servers))))
        elif cmd == "publish":
            keys = []
            for i, server in enumerate(servers[:arg]):
                key = f"k{index}-{i}"
                await server.set(key, "v" * 60)
                keys.append(key)
            conn.send(keys)
        elif cmd == "lookups":
            keys, count = arg
            sem = asyncio.Semaphore(CONCURRENCY)

            async def kone(key: str, sem: asyncio.Semaphore) -> tuple[bool, int, float]:
                async with sem:
                    askers = [s for s in servers if s.storage.get(digest(key)) is None] or servers
                    server = rng.choice(askers)
                    start = time.perf_counter()
                    value = await server.get(key)
                    return value is not None, -1, time.perf_counter() - start

            conn.send(await asyncio.gather(*(kone(rng.choice(keys), sem) for _ in range(count))))
        elif cmd == "stats":
            conn.send({})
        elif cmd == "stop":
            for server in servers:
                server.stop()
            conn.send("stopped")
            return


def _worker_main(impl: str, index: int, per: int, conn: Any, base: str) -> None:
    _raise_nofile()
    fn = _chr_worker if impl == "chr" else _kad_worker
    asyncio.run(fn(index, per, conn, Path(base)))


# ---- driver ---------------------------------------------------------------------------------------
class Network:
    def __init__(self, impl: str, nodes: int, base: Path) -> None:
        per = nodes // WORKERS
        ctx = mp.get_context("fork")
        self.conns, self.procs, self.endpoints = [], [], []
        for i in range(WORKERS):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(impl, i, per, child, str(base)), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            self.endpoints.append(conn.recv())

    def ask(self, workers: list[int], cmd: str, arg: Any = None) -> list[Any]:
        for i in workers:
            self.conns[i].send((cmd, arg))
        return [self.conns[i].recv() for i in workers]

    def close(self, alive: list[int]) -> None:
        try:
            self.ask(alive, "stop")
        finally:
            for proc in self.procs:
                if proc.is_alive():
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.kill()
                proc.join(5)


Figures = dict[str, float]


def _figures(results: list[tuple[bool, int, float]]) -> Figures:
    ok = [r for r in results if r[0]]
    times = sorted(r[2] * 1000 for r in results)
    hops = [r[1] for r in ok if r[1] >= 0]
    return {
        "success": 100 * len(ok) / len(results),
        "median": statistics.median(times),
        "p95": times[int(len(times) * 0.95) - 1],
        "hops": statistics.median(hops) if hops else float("nan"),
        "hops_max": max(hops) if hops else float("nan"),
    }


def _line(label: str, fig: Figures, links: str = "") -> str:
    measured = not math.isnan(fig["hops"])
    hop_text = f"hops median {fig['hops']:.0f} max {fig['hops_max']:.0f}" if measured else ""
    return (
        f"  {label:<12} success {fig['success']:5.1f}%  median {fig['median']:7.1f} ms  "
        f"p95 {fig['p95']:7.1f} ms  {hop_text}{links}"
    )


def _link_text(before: list[dict[str, int]], after: list[dict[str, int]], lookups: int) -> str:
    """Dials (each one TLS handshake and a peer hello) per lookup during the phase, links held."""
    if not after or not after[0]:
        return ""
    dials = sum(a["dials"] for a in after) - sum(b["dials"] for b in before)
    evictions = sum(a["evictions"] for a in after) - sum(b["evictions"] for b in before)
    nodes = sum(a["nodes"] for a in after)
    links = sum(a["links"] for a in after) / nodes
    cpu = (sum(a["cpu"] for a in after) - sum(b["cpu"] for b in before)) / lookups * 1000
    sent = (sum(a["requests"] for a in after) - sum(b["requests"] for b in before)) / lookups
    probes = (sum(a["probes"] for a in after) - sum(b["probes"] for b in before)) / lookups
    return (
        f"\n  {'':<12} dials/lookup {dials / lookups:.2f}, evictions {evictions}, links/node {links:.0f}, "
        f"CPU per lookup {cpu:.1f} ms (all nodes)"
        f"\n  {'':<12} requests/lookup {sent:.1f}, of them table probes {probes:.1f}"
    )


def run(impl: str, nodes: int, lookups: int, failure: str) -> tuple[list[str], dict[str, Figures]]:
    lines, figs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        net = Network(impl, nodes, Path(tmp))
        everyone = list(range(WORKERS))
        alive = everyone
        try:
            seed = net.endpoints[0][0]
            start = time.perf_counter()
            joined = sum(net.ask(everyone, "join", seed))
            boot = time.perf_counter() - start
            figs["bootstrap"] = {"median": boot * 1000}
            stats = net.ask(everyone, "stats")
            if stats[0]:
                table = sum(s["table"] for s in stats) / nodes
                links = sum(s["links"] for s in stats) / nodes
                rss = sum(s["rss"] for s in stats) / 2**20
                lines.append(
                    f"  bootstrap: {joined}/{nodes} joined in {boot:.1f} s; routing table {table:.0f}, "
                    f"links {links:.0f} per node; dials {sum(s['dials'] for s in stats)}, "
                    f"evictions {sum(s['evictions'] for s in stats)}; RSS of the workers {rss:.0f} MiB"
                )
            else:
                lines.append(f"  bootstrap: {joined}/{nodes} joined in {boot:.1f} s")
            keys = [k for ks in net.ask(everyone, "publish", 100 // WORKERS) for k in ks]
            per = lookups // WORKERS
            before = net.ask(everyone, "stats")
            results = [r for rs in net.ask(everyone, "lookups", (keys, per)) for r in rs]
            figs["alive"] = _figures(results)
            after = net.ask(everyone, "stats")
            lines.append(_line("all alive", figs["alive"], _link_text(before, after, len(results))))
            victim = net.procs[WORKERS - 1]
            if failure == "killed":
                os.kill(victim.pid, signal.SIGKILL)
            else:
                os.kill(victim.pid, signal.SIGSTOP)
            alive = everyone[:-1]
            per = lookups // len(alive)
            before = net.ask(alive, "stats")
            results = [r for rs in net.ask(alive, "lookups", (keys, per)) for r in rs]
            figs[failure] = _figures(results)
            after = net.ask(alive, "stats")
            lines.append(_line(f"25% {failure}", figs[failure], _link_text(before, after, len(results))))
        finally:
            net.close(alive)
    return lines, figs


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def main() -> None:
    global WORKERS, MAX_LINKS, REFRESH_ON_JOIN
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1, help="runs of each network; medians [min-max]")
    parser.add_argument("--workers", type=int, default=WORKERS, help="processes the nodes are spread over")
    parser.add_argument("--max-links", type=int, default=MAX_LINKS, help="chr-node's pool cap per node")
    parser.add_argument(
        "--no-refresh-on-join", action="store_true", help="chr-node joins without refreshing the buckets"
    )
    parser.add_argument("--failures", default="killed,silent", help="which failure networks to run")
    parser.add_argument("--only", choices=["chr", "kademlia"])
    args = parser.parse_args()
    WORKERS, MAX_LINKS = args.workers, args.max_links
    REFRESH_ON_JOIN = REFRESH_ON_JOIN and not args.no_refresh_on_join
    impls = ["chr", "kademlia"] if args.only is None else [args.only]
    if "kademlia" in impls:
        try:
            import kademlia  # noqa: F401
        except ImportError:
            print("kademlia is not installed (pip install kademlia): baseline skipped")
            impls.remove("kademlia")
    print(
        f"DHT over real sockets: {args.nodes} nodes in {WORKERS} processes, {args.lookups} value lookups, "
        f"{args.runs} run(s), chr-node pool cap {MAX_LINKS} links, refresh on join {REFRESH_ON_JOIN}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    names = {"chr": "chr-node (TLS peer links)", "kademlia": "PyPI kademlia 2.2 (UDP, baseline)"}
    collected: dict[tuple[str, str, str], list[float]] = {}
    for run_no in range(1, args.runs + 1):
        for impl in impls:
            for failure in args.failures.split(","):
                print(f"run {run_no}: {names[impl]}, then the last worker {failure}:", flush=True)
                lines, figs = run(impl, args.nodes, args.lookups, failure)
                for line in lines:
                    print(line, flush=True)
                for phase, fig in figs.items():
                    for metric, value in fig.items():
                        collected.setdefault((impl, phase, metric), []).append(value)
    print(f"\nSummary over {args.runs} run(s): median [min-max] of each run's figure")
    print(f"  {'':<36} {'phase':<10} {'success %':>14} {'median ms':>22} {'p95 ms':>24}")
    for impl in impls:
        boot = collected.get((impl, "bootstrap", "median"), [])
        print(f"  {names[impl]:<36} {'bootstrap':<10} {'':>14} {_spread(boot):>22}")
        for phase in ("alive", "killed", "silent"):
            row = [collected.get((impl, phase, m), []) for m in ("success", "median", "p95")]
            if row[0]:
                cells = f"{_spread(row[0]):>14} {_spread(row[1]):>22} {_spread(row[2]):>24}"
                print(f"  {names[impl]:<36} {phase:<10} {cells}")


if __name__ == "__main__":
    main()
