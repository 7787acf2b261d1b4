"""Benchmark of SPEC 13: JSON-RPC chr_node_info at least 0.8x a minimal Tornado JSON handler.

    .venv/bin/python bench/bench_rpc.py [--seconds S] [--connections C] [--rounds R]

Starts two servers in separate processes on 127.0.0.1 (free ports): (a) the node's RPC app over
a realistic snapshot, (b) a minimal Tornado handler that answers every POST with json.dumps of a
small dict. Each is driven with `wrk` (Debian package `wrk`; a C load generator, so the client is
not the bottleneck) with C keep-alive connections POSTing the same chr_node_info request for S
seconds (wrk runs for a fixed time; stopping it after a fixed count still waits out -d).

The machine has 2 cores and is shared, so rounds alternate (a) and (b) and the best round of each
is compared. Each server's CPU time per request (from psutil) is printed too: it is much less
disturbed by other load than requests/s. Only loopback is used; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REQUEST = {"jsonrpc": "2.0", "method": "chr_node_info", "params": [], "id": 1}
TARGET = 0.8

LUA = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
"""


def serve(kind: str) -> None:
    """Child process: serve `kind` ("node" or "baseline") on a free port, print the port, run."""
    import asyncio

    import tornado.web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    async def main() -> None:
        if kind == "node":
            from chrnode.rpc.api import NodeView
            from chrnode.rpc.server import start_servers
            from chrnode.testing.rpc import rpc_factory, sample_snapshot

            app = rpc_factory(NodeView(sample_snapshot()))()
            _, _, (port, _) = start_servers(app, 0, None, "127.0.0.1", None)
        else:

            class Minimal(tornado.web.RequestHandler):
                def post(self) -> None:
                    self.set_header("Content-Type", "application/json")
                    self.write(
                        json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"ok": True, "node": "baseline"}})
                    )

            sockets = bind_sockets(0, address="127.0.0.1")
            HTTPServer(tornado.web.Application([(r"/rpc", Minimal)])).add_sockets(sockets)
            port = sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start(kind: str) -> tuple[subprocess.Popen[str], int]:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        raise SystemExit(f"the {kind} server did not start (printed {line!r})")
    return proc, int(line)


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def drive(port: int, seconds: float, connections: int, lua: Path) -> tuple[float, int]:
    """Run wrk for `seconds`; return (requests/s, requests answered)."""
    url = f"http://127.0.0.1:{port}/rpc"
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if not rate or not count or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk output not understood or errors seen:\n{out}")
    return float(rate.group(1)), int(count.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=["node", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "post.lua"
        lua.write_text(LUA % {"body": json.dumps(REQUEST)})
        procs = {kind: start(kind) for kind in ("node", "baseline")}
        best = {"node": 0.0, "baseline": 0.0}
        cpu_best = {"node": float("inf"), "baseline": float("inf")}
        try:
            for _, port in procs.values():
                drive(port, 1, args.connections, lua)  # warm-up: imports, caches, connections
            for rnd in range(args.rounds):
                for kind in ("node", "baseline") if rnd % 2 == 0 else ("baseline", "node"):
                    proc, port = procs[kind]
                    before = _cpu(proc.pid)
                    rps, count = drive(port, args.seconds, args.connections, lua)
                    cpu_us = (_cpu(proc.pid) - before) / count * 1e6
                    best[kind] = max(best[kind], rps)
                    cpu_best[kind] = min(cpu_best[kind], cpu_us)
                    print(
                        f"round {rnd + 1}: {kind:8s} {rps:7.0f} req/s  {cpu_us:6.0f} us CPU/request "
                        f"({count} requests)",
                        flush=True,
                    )
                    time.sleep(0.5)
        finally:
            for proc, _ in procs.values():
                proc.terminate()
                proc.wait(10)
    ratio = best["node"] / best["baseline"]
    cpu_ratio = cpu_best["baseline"] / cpu_best["node"]
    print(f"chr_node_info:   {best['node']:7.0f} req/s  {cpu_best['node']:6.0f} us CPU/request")
    print(f"minimal Tornado: {best['baseline']:7.0f} req/s  {cpu_best['baseline']:6.0f} us CPU/request")
    print(f"(best of {args.rounds} rounds of {args.seconds:g} s, {args.connections} connections)")
    print(f"ratio by CPU/request: {cpu_ratio:.2f}")
    print(f"ratio: {ratio:.2f} (target >= {TARGET}): {'PASS' if ratio >= TARGET else 'FAIL'}")


if __name__ == "__main__":
    main()
