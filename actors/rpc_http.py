"""Network.RpcHttp and Network.RpcHttps: the JSON-RPC API on Tornado (SPEC 8, 12).

Tornado runs on an asyncio loop in a thread of this actor's process. Read methods are answered
from the snapshot other actors publish (PubSub topic "snapshot"), which this actor's thread
writes into a `NodeView` and the loop thread only reads: no actor round trip per request.
Admin methods go to the root supervisor through the ThreadBridge and wait for its answer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path
from typing import Any

from actors import messages as m
from actors.base import ChrActor, LoopAsks, LoopThread
from actors.rpc_methods import chain_methods
from actors.tree import ROOT
from chrnode.errors import ConfigError, RpcError
from chrnode.ports_file import REBIND_SECONDS, ports_to_bind, previous_ports
from chrnode.rpc.api import NodeView
from chrnode.rpc.guard import RpcLimits
from chrnode.rpc.server import make_app, read_cookie, start_servers
from chrnode.stats import LocalStats

START_TIMEOUT = 15.0
ADMIN_TIMEOUT = 30.0
STATS_SECONDS = 1.0
STOP_SECONDS = 2.0  # open requests get this long to finish when the actor stops
TREE_CATCH_UP = 5.0  # an admin restart waits this long at most for the tree to show it

_log = logging.getLogger("chrnode.actor.rpc")


def tree_shows_running(snapshot: Any, name: str, pid: int) -> bool:
    """The published tree has `name` running as process `pid`."""
    tree = snapshot.get("tree") if isinstance(snapshot, dict) else None
    for row in tree if isinstance(tree, list | tuple) else ():
        if isinstance(row, dict) and row.get("name") == name:
            return row.get("state") == "running" and row.get("pid") == pid
    return False


class _Admin:
    """AdminOps for the RPC layer: runs on the loop thread, asks the root supervisor."""

    def __init__(self, asks: LoopAsks, view: NodeView) -> None:
        self.asks = asks
        self.view = view

    async def restart_actor(self, name: str) -> None:
        # The root (or the sub-supervisor owning `name`) answers AdminReply once it runs again,
        # with its new pid. The tree this view shows comes another way (supervisor, root, PubSub,
        # here) and can lag that answer: a client reading chr_node_info right after would see
        # the old process as running. Answer once the view shows the new one (TREE_CATCH_UP s at
        # most: the restart itself is done, only its report is late).
        reply = await self.asks.ask(ROOT, m.RestartActor(name), ADMIN_TIMEOUT)
        if not reply.ok:
            raise RpcError(-32602, reply.message, {"name": name})
        pid = reply.result
        if not isinstance(pid, int) or pid <= 0:
            return
        deadline = time.monotonic() + TREE_CATCH_UP
        while not tree_shows_running(self.view.snapshot, name, pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def set_log_level(self, level: str) -> None:
        self.asks.bridge.post(ROOT, m.SetLogLevel(level.lower()))  # the root passes it to every actor

    async def stop(self) -> None:
        self.asks.bridge.post(ROOT, m.StopNode("admin_stop"))


class RpcActor(ChrActor):
    SUBSCRIBE = ("snapshot",)
    KIND = "rpc"

    def on_start(self, init: m.Init) -> None:
        cfg = self.config
        self.view = NodeView()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Any = None  # the Tornado HTTPServer, closed by on_stop
        self.start_bridge()
        token = read_cookie(Path(cfg.cookie_path))
        self.thread = LoopThread(f"{self.name}-tornado")
        self.port = self.thread.start(lambda: self._serve(token), START_TIMEOUT)
        self.log.info("%s listening on %s:%d", self.name, cfg.rpc_bind, self.port)

    def receiveMsg_RegistryUpdate(self, msg: m.RegistryUpdate, sender: Any) -> None:
        super().receiveMsg_RegistryUpdate(msg, sender)
        if self.globals_is_new():
            self.send_to("Globals", m.PortsBound(self.KIND, (self.port,)))

    def ssl_context(self) -> ssl.SSLContext | None:
        return None

    async def _serve(self, token: str) -> int:
        """On the loop thread: build the app and listen (Tornado registers with this loop)."""
        loop = asyncio.get_running_loop()
        self.loop = loop
        cfg = self.config
        stats = LocalStats(self.name)

        def observe(path: str, status: int, seconds: float) -> None:
            stats.record("rpc_request_seconds", seconds)
            stats.incr("rpc_requests_total", labels={"status": str(status // 100) + "xx"})
            if status >= 500:
                stats.incr("errors_total", labels={"category": "rpc"})

        def flush() -> None:
            batch = stats.drain()
            if not batch.is_empty() and self.bridge is not None:
                self.bridge.post("Stats", m.StatsReport(self.name, batch))
            loop.call_later(STATS_SECONDS, flush)

        assert self.asks is not None
        app = make_app(
            self.view,
            _Admin(self.asks, self.view),
            admin_token=token,
            max_body=cfg.rpc_max_body,
            max_batch=cfg.rpc_max_batch,
            observer=observe,
            extra_methods=chain_methods(self.asks),
        )
        tls = self.ssl_context()
        configured = cfg.rpc_port if tls is None else cfg.rpcs_port
        # Port 0 on a restart: bind the port this listener had, so clients keep reaching it.
        (wanted,) = ports_to_bind((configured,), previous_ports(cfg.data_dir, self.KIND))
        if wanted == configured:
            port = self._listen(app, configured, tls)
        else:
            port = await self._listen_again(app, wanted, configured, tls)
        loop.call_later(STATS_SECONDS, flush)
        return port

    async def _listen_again(self, app: Any, wanted: int, configured: int, tls: ssl.SSLContext | None) -> int:
        """Bind the port this listener had, as the edge listener does its device ports: its old
        holder may still be letting go of it (a rebuilt actor system), so try for REBIND_SECONDS,
        then take a fresh one (clients must then be told: the ports file names it)."""
        deadline = time.monotonic() + REBIND_SECONDS
        while True:
            try:
                return self._listen(app, wanted, tls)
            except ConfigError as exc:
                if time.monotonic() >= deadline:
                    _log.warning(
                        "%s: port %d not bound again within %g s (%s); taking a fresh one",
                        self.name,
                        wanted,
                        REBIND_SECONDS,
                        exc,
                    )
                    return self._listen(app, configured, tls)
            await asyncio.sleep(0.1)

    def _listen(self, app: Any, port: int, tls: ssl.SSLContext | None) -> int:
        cfg = self.config
        limits = RpcLimits(cfg.rpc_max_connections, cfg.rpc_header_timeout, cfg.rpc_body_timeout)
        if tls is None:
            http, _, (bound, _) = start_servers(app, port, None, cfg.rpc_bind, limits=limits)
            self.server = http
        else:
            _, https, (_, bound) = start_servers(app, None, port, cfg.rpc_bind, tls, limits)
            self.server = https
        assert bound is not None
        return bound

    def on_published(self, topic: str, key: str, payload: Any) -> None:
        self.view.set_part(key, payload)

    def on_stop(self) -> None:
        # Close the listening socket before the supervisor hears Exiting: it starts the
        # replacement then, without waiting for this process to be reaped, and the replacement
        # binds the same port (a stopped loop closes no sockets of its own).
        self.thread.stop(self._stop)

    async def _stop(self) -> None:
        if self.server is None:
            return
        self.server.stop()  # the listening socket, at once
        try:
            await asyncio.wait_for(self.server.close_all_connections(), STOP_SECONDS)
        except TimeoutError:
            _log.warning("%s: requests still open at stop", self.name)


class RpcHttp(RpcActor):
    KIND = "rpc"


class RpcHttps(RpcActor):
    KIND = "rpcs"

    def ssl_context(self) -> ssl.SSLContext | None:
        from chrnode.daemon import rpcs_cert_paths

        cert, key = rpcs_cert_paths(self.config)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # SPEC 3: 1.2 and 1.3 on the RPC port
        context.load_cert_chain(str(cert), str(key))
        return context
