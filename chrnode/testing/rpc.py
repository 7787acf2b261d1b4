"""Helpers shared by the JSON-RPC tests and bench/bench_rpc.py: a realistic snapshot, an AdminOps
that records calls, and the RPC app served on 127.0.0.1 port 0 from a background thread."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import Callable
from typing import Any

from chrnode.errors import ChrError
from chrnode.rpc.server import RpcApplication, make_app, start_servers
from chrnode.stats import BANDWIDTH_IN, BANDWIDTH_OUT, CONNECTIONS, LocalStats, StatsAggregate

TOKEN = "5f0c7e4b9a1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f80912"

_TREE = [
    ("ChronaraNode.Supervisor", "", "permanent"),
    ("Globals", "ChronaraNode.Supervisor", "permanent"),
    ("Stats", "ChronaraNode.Supervisor", "permanent"),
    ("Network.Stats", "ChronaraNode.Supervisor", "permanent"),
    ("Model.Sql", "ChronaraNode.Supervisor", "permanent"),
    ("Model.Sql.Worker", "Model.Sql", "permanent"),
    ("Model.Sql.Cache", "Model.Sql", "permanent"),
    ("TicketStore", "ChronaraNode.Supervisor", "permanent"),
    ("Cron", "ChronaraNode.Supervisor", "permanent"),
    ("Channels", "ChronaraNode.Supervisor", "permanent"),
    ("PubSub", "ChronaraNode.Supervisor", "permanent"),
    ("Connectivity", "ChronaraNode.Supervisor", "permanent"),
    ("Network.EdgeV2.Listener", "ChronaraNode.Supervisor", "transient"),
    ("Network.RpcHttp", "ChronaraNode.Supervisor", "transient"),
    ("Network.RpcHttps", "ChronaraNode.Supervisor", "transient"),
]


def sample_stats(now: float) -> dict[str, Any]:
    """The `stats` part as the Stats actor publishes it (chrnode.stats.StatsAggregate.snapshot)."""
    edge, rpc = LocalStats("Network.EdgeV2.Listener"), LocalStats("Network.RpcHttp")
    edge.set_gauge(CONNECTIONS, 42)
    edge.incr(BANDWIDTH_IN, 123456789)
    edge.incr(BANDWIDTH_OUT, 98765432)
    edge.incr("errors_total", 3, labels={"category": "tickets"})
    rpc.incr("errors_total", 1, labels={"category": "rpc"})
    rpc.incr("cache_hits_total", 900, labels={"cache": "chain_l1"})
    rpc.incr("cache_misses_total", 100, labels={"cache": "chain_l1"})
    rpc.incr("rpc_requests_total", 5000, labels={"status": "2xx"})
    for i in range(1000):
        rpc.record("rpc_request_seconds", 0.0005 + (i % 10) * 0.0001)  # p90 about 1.4 ms
        edge.record("edge_request_seconds", 0.002 + (i % 10) * 0.0005)
    aggregate = StatsAggregate(now - 3600.5)
    aggregate.merge(edge.drain())
    aggregate.merge(rpc.drain())
    return aggregate.snapshot(now)


def sample_snapshot(now: float | None = None) -> dict[str, Any]:
    """A snapshot like a running node's: every part filled, everything healthy."""
    now = time.time() if now is None else now
    return {
        "node": {
            "address": "0x" + "ab" * 20,
            "version": "0.1.0",
            "started_at": now - 3600.5,
            "host": "node1.example.org",
            "ports": {"rpc": 8545, "rpcs": 8443, "edge2": [41046, 41047], "peer2": 51055},
        },
        "tree": [
            {
                "name": n,
                "parent": p,
                "state": "running",
                "restarts": i % 3,
                "restart_type": r,
                "pid": 0,
                "reason": "",
                "last_exit": "",
            }
            for i, (n, p, r) in enumerate(_TREE)
        ],
        "stats": sample_stats(now),
        "cron": [
            {
                "name": "tickets.submit",
                "interval": 3600.0,
                "last_run": now - 60,
                "last_ok": True,
                "last_duration": 0.2,
            }
        ],
        "connectivity": {
            "listeners": {"edge2": True, "peer2": True, "rpc": True},
            "peers_connected": 7,
            "peers_known": 20,
        },
        "peers": [
            {
                "node_id": "0x" + f"{i:02x}" * 20,
                "host": "127.0.0.1",
                "port": 51055 + i,
                "state": "connected" if i < 7 else "known",
                "last_seen": now - i,
            }
            for i in range(20)
        ],
        "fleet": {
            "configured": True,
            "connected": True,
            "fleet": "0x" + "cd" * 20,
            "seed_nodes": ["0x" + "ef" * 20 + "@127.0.0.1:51055"],
            "connected_nodes": 1,
        },
        "chain": {"configured": True, "reachable": True, "synced": True, "head_block": 1234, "lag_s": 2.0},
        "reward": {"epoch": 668, "earned": "1500000000000000000", "pending": "0", "rate_per_hour": 0.25},
        "storage": {"writable": True, "checked_at": now - 5},
    }


class RecordingAdmin:
    """An AdminOps that records each call; `fail` makes every call raise it, `delay` slows it."""

    def __init__(self, fail: ChrError | None = None, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail
        self.delay = delay

    async def _do(self, *call: str) -> None:
        self.calls.append(call)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail

    async def restart_actor(self, name: str) -> None:
        await self._do("restart_actor", name)

    async def set_log_level(self, level: str) -> None:
        await self._do("set_log_level", level)

    async def stop(self) -> None:
        await self._do("stop")


class ServedApp:
    """Runs an RpcApplication on its own IOLoop thread on 127.0.0.1 port 0 (HTTP, plus HTTPS when
    an SSL context is given). Use as a context manager; `url` is the HTTP base URL."""

    def __init__(
        self, factory: Callable[[], RpcApplication], ssl_ctx: Any = None, limits: Any = None
    ) -> None:
        self._factory = factory
        self._ssl_ctx = ssl_ctx
        self._limits = limits  # chrnode.rpc.guard.RpcLimits, or None for the defaults
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="rpc-test-server", daemon=True)
        self.app: RpcApplication | None = None
        self.port = 0
        self.https_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServedApp:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("RPC test server did not start within 20 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(20)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        servers: list[Any] = []
        try:
            self.app = self._factory()
            https = 0 if self._ssl_ctx is not None else None
            http_srv, https_srv, (port, sport) = start_servers(
                self.app, 0, https, "127.0.0.1", self._ssl_ctx, self._limits
            )
            servers = [s for s in (http_srv, https_srv) if s is not None]
            self.port = port or 0
            self.https_port = sport
        except BaseException as exc:  # reported to the test thread by __enter__
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for server in servers:
                server.stop()
            for server in servers:
                loop.run_until_complete(server.close_all_connections())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def rpc_factory(view: Any, admin: Any | None = None, **kwargs: Any) -> Callable[[], RpcApplication]:
    """A factory for ServedApp with the test token and a recording admin by default."""

    def factory() -> RpcApplication:
        kwargs.setdefault("admin_token", TOKEN)
        return make_app(view, admin if admin is not None else RecordingAdmin(), **kwargs)

    return factory


def http_post(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 20.0
) -> tuple[int, dict[str, str], bytes]:
    """One POST on a fresh connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        conn.request("POST", path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def http_get(port: int, path: str, timeout: float = 20.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
