"""Idle peer-link memory and the CPU of a new link (SPEC 4 peer port): what Connection.Pool keeps.

    .venv/bin/python bench/bench_peer_links.py [--links 200] [--runs 3]

One process (a fresh one per run: RSS never shrinks) runs 1 + N peer nodes (TLS on loopback,
peer hello both ways); the first dials each of the others, so N links exist, each with both
ends in this process. The RSS growth over the N dials, halved (two ends per link), is the cost
of one link end: what a node pays per entry of its pool (config peer_max_links). The CPU time
of the dials per link is what a link that was not kept costs when that peer is asked again
(both ends' TLS handshake and peer hello). Baseline in the same run: the RSS of the 1 + N idle
nodes before any link, per node. Median [min-max] over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.net.peers import PeerNetworkConfig
from chrnode.peer.pool import PoolConfig
from chrnode.testing.peers import start_peer_nodes


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _one(links: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        start = _rss()
        net = PeerNetworkConfig(accepts_per_second_per_ip=1e6, pool=PoolConfig(max_links=links + 1))
        nodes = await start_peer_nodes(Path(tmp), links + 2, net_config=net)
        hub = nodes[0]
        # One link first, so that the allocator's pools and the ssl module's caches exist.
        await hub.network.connect(nodes[1].key.address, "127.0.0.1", nodes[1].contact.peer_port)
        await asyncio.sleep(0.2)
        gc.collect()
        before = _rss()
        cpu = time.process_time()
        for other in nodes[2:]:
            await hub.network.connect(other.key.address, "127.0.0.1", other.contact.peer_port)
        cpu = time.process_time() - cpu
        await asyncio.sleep(0.5)
        gc.collect()
        after = _rss()
        assert len(hub.network.links) == links + 1
        for node in nodes:
            await node.stop()
        return (after - before) / links / 2 / 1024, (before - start) / len(nodes) / 1024, cpu / links * 1000


def _child(links: int, conn: object) -> None:
    conn.send(asyncio.run(_one(links)))  # type: ignore[attr-defined]


def _in_a_fresh_process(links: int) -> tuple[float, float, float]:
    """RSS never shrinks: every run needs a process of its own."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(links, child))
    proc.start()
    result: tuple[float, float, float] = parent.recv()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    per_link, per_node, cpu = [], [], []
    for _ in range(args.runs):
        link, node, ms = _in_a_fresh_process(args.links)
        per_link.append(link)
        per_node.append(node)
        cpu.append(ms)
        print(
            f"  run: {link:.1f} KiB per idle link end; an idle node without links {node:.0f} KiB; "
            f"{ms:.1f} ms CPU per new link"
        )

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"

    print(f"{args.links} idle peer links, {args.runs} runs: {spread(per_link)} KiB per link end")
    print(f"baseline, an idle peer node without links: {spread(per_node)} KiB")
    print(f"CPU to open one link (TLS 1.2 on secp256k1 and the peer hello, both ends): {spread(cpu)} ms")
    cap = PoolConfig().max_links
    print(f"the default pool cap ({cap} links) full: {statistics.median(per_link) * cap / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
