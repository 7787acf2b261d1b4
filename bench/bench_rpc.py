"""Benchmark of SPEC 13: JSON-RPC chr_node_info at least 0.8x a minimal Tornado JSON handler.

    .venv/bin/python bench/bench_rpc.py [--requests N] [--connections C] [--rounds R]

Starts two servers in separate processes on 127.0.0.1 (free ports): (a) the node's RPC app over
a realistic snapshot, (b) a minimal Tornado handler that answers every POST with json.dumps of a
small dict. Each is driven with `wrk` (Debian package `wrk`; a C load generator, so the client is
not the bottleneck) with C keep-alive connections POSTing the same chr_node_info request until N
responses have come back. Rounds alternate (a) and (b) so background load hits both alike; the
best round of each is compared. Only loopback is used; every run is bounded in count and time.
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

REQUEST = {"jsonrpc": "2.0", "method": "chr_node_info", "params": [], "id": 1}
TARGET = 0.8

LUA = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
local limit = %(per_thread)d
local done = 0
local bad = 0
function response(status, headers, body)
  done = done + 1
  if status ~= 200 or not string.find(body, '"result"', 1, true) then bad = bad + 1 end
  if done >= limit then wrk.thread:stop() end
end
function done_report(summary, latency, requests) end
"""


def serve(kind: str) -> None:
    """Child process: serve `kind` ("node" or "baseline") on a free port, print the port, run."""
    import asyncio

    import tornado.web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    async def main() -> None:
        if kind == "node":
            from chrnode.rpc_api import NodeView
            from chrnode.rpc_server import start_servers
            from chrnode.testing.rpc import rpc_factory, sample_snapshot

            app = rpc_factory(NodeView(sample_snapshot()))()
            _, _, (port, _) = start_servers(app, 0, None, "127.0.0.1", None)
        else:

            class Minimal(tornado.web.RequestHandler):
                def post(self) -> None:
                    self.set_header("Content-Type", "application/json")
                    self.write(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"ok": True, "node": "baseline"}}))

            sockets = bind_sockets(0, address="127.0.0.1")
            HTTPServer(tornado.web.Application([(r"/rpc", Minimal)])).add_sockets(sockets)
            port = sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start(kind: str) -> tuple[subprocess.Popen[str], int]:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        raise SystemExit(f"the {kind} server did not start (printed {line!r})")
    return proc, int(line)


def drive(port: int, requests: int, connections: int, lua: Path) -> float:
    """Run wrk until `requests` responses came back; return requests/s."""
    cmd = ["wrk", "-t1", f"-c{connections}", "-d120s", "--timeout", "10s", "-s", str(lua), f"http://127.0.0.1:{port}/rpc"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or "Non-2xx" in out:
        raise SystemExit(f"wrk output not understood or errors seen:\n{out}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40000)
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
        lua.write_text(LUA % {"body": json.dumps(REQUEST), "per_thread": args.requests})
        warm = Path(tmp) / "warm.lua"
        warm.write_text(LUA % {"body": json.dumps(REQUEST), "per_thread": 2000})
        procs = {kind: start(kind) for kind in ("node", "baseline")}
        best = {"node": 0.0, "baseline": 0.0}
        try:
            for kind, (_, port) in procs.items():
                drive(port, 2000, args.connections, warm)
            for rnd in range(args.rounds):
                for kind in ("node", "baseline") if rnd % 2 == 0 else ("baseline", "node"):
                    rps = drive(procs[kind][1], args.requests, args.connections, lua)
                    best[kind] = max(best[kind], rps)
                    print(f"round {rnd + 1}: {kind:8s} {rps:9.0f} req/s", flush=True)
                    time.sleep(0.5)
        finally:
            for proc, _ in procs.values():
                proc.terminate()
                proc.wait(10)
    ratio = best["node"] / best["baseline"]
    print(f"chr_node_info:    {best['node']:9.0f} req/s (best of {args.rounds})")
    print(f"minimal Tornado:  {best['baseline']:9.0f} req/s (best of {args.rounds})")
    print(f"ratio: {ratio:.2f} (target >= {TARGET}): {'PASS' if ratio >= TARGET else 'FAIL'}")


if __name__ == "__main__":
    main()
