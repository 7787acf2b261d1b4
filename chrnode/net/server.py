"""The network server: one event loop hosting every listener and outbound link of the node.

    network = NetworkServer()
    await network.start()                                  # binds to the running loop
    edge = EdgeServer(config, key, context, hooks, network=network)
    await edge.start()                                     # registers the "edge2" listeners
    conn = await network.connect("edge", host, port, context, protocol)   # an outbound link
    await network.stop()

Every byte stream of the node lives here, on this loop of the one network process: the device
ports now, the peer port and the links to other nodes next (issue 10). A service (the edge server,
later the peer service) asks for listeners and links by name; the server counts them and closes
them on stop. Port bytes never leave this loop: a port between a device here and a device behind
a link is two port ends of chrnode.edge.ports, both on this loop. The same seam lets the node
later run one network server per core: a port between two workers is then a port over a link
between two workers, flowing like a port between two nodes.

The actor that runs this loop (actors/edge_listener.py) stays thin: it starts and stops it and
relays what the services ask of other actors; no socket and no port byte crosses it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from chrnode.edge.tlsconn import TlsConnection, TlsProtocol
from chrnode.edge.tlslisten import TlsListener, open_tls_connection, start_tls_server
from chrnode.errors import ChrError
from chrnode.net.looplag import LoopLagSampler

__all__ = ["NetworkServer"]

_log = logging.getLogger("chrnode.net")


class NetworkServer:
    """Listeners and outbound links by service name, and the tasks of the services, on one loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: dict[str, list[TlsListener]] = {}
        self._links: dict[str, set[TlsConnection]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.lag: LoopLagSampler | None = None  # how late this loop runs (chrnode.net.looplag)

    async def start(self) -> None:
        """Bind the server to the running loop (idempotent) and start sampling its lag."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self.lag = LoopLagSampler(self._loop)
            self.lag.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ChrError("the network server is not started")
        return self._loop

    @property
    def started(self) -> bool:
        return self._loop is not None and not self._stopping

    # ---- listeners ---------------------------------------------------------------------------

    def listen(
        self,
        service: str,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        protocol_factory: Callable[[tuple[str, int]], TlsProtocol | None],
        handshake_timeout: float,
        *,
        backlog: int = 1024,
        defer_accept: float = 0.0,
    ) -> TlsListener:
        """Listen on (host, port) for ``service``; OSError if the port cannot be bound.

        ``defer_accept`` > 0: the kernel holds back connections that send nothing that long
        (TCP_DEFER_ACCEPT, chrnode.edge.tlslisten), so silent sockets cost no accept."""
        listener = start_tls_server(
            self.loop, ssl_context, host, port, protocol_factory, handshake_timeout, backlog, defer_accept
        )
        self._listeners.setdefault(service, []).append(listener)
        _log.debug("%s listening on %s:%d", service, host, listener.port)
        return listener

    def listeners(self, service: str) -> list[TlsListener]:
        return list(self._listeners.get(service, ()))

    def close_listeners(self, service: str) -> None:
        for listener in self._listeners.pop(service, ()):
            listener.close()

    def close_all_listeners(self) -> None:
        """Stop accepting on every port at once (the first step of a stop: a replacement process
        may bind the same ports while this one still says goodbye to its devices and peers)."""
        for service in list(self._listeners):
            self.close_listeners(service)

    # ---- outbound links ----------------------------------------------------------------------

    async def connect(
        self,
        service: str,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        protocol: TlsProtocol,
        handshake_timeout: float = 30.0,
    ) -> TlsConnection:
        """An outbound TLS link for ``service``, on this loop; closed by stop() if still open."""
        if self._stopping:
            raise ChrError("the network server is stopping")
        conn = await open_tls_connection(host, port, ssl_context, protocol, handshake_timeout)
        self._links.setdefault(service, set()).add(conn)
        return conn

    def links(self, service: str) -> list[TlsConnection]:
        """The open outbound links of ``service`` (closed ones are dropped here)."""
        links = self._links.get(service, set())
        for conn in [c for c in links if c.is_closing]:
            links.discard(conn)
        return list(links)

    # ---- tasks -------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task kept referenced until it ends (errors logged), cancelled on stop."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("network task failed", exc_info=task.exception())

    async def cancel_tasks(self, tasks: set[asyncio.Task[Any]] | None = None) -> None:
        """Cancel ``tasks`` (default: every task) and wait for them."""
        chosen = list(self._tasks if tasks is None else tasks)
        for task in chosen:
            task.cancel()
        await asyncio.gather(*chosen, return_exceptions=True)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def stop(self) -> None:
        """Close every listener and link and cancel the remaining tasks."""
        if self._loop is None or self._stopping:
            return
        self._stopping = True
        if self.lag is not None:
            self.lag.stop()
        self.close_all_listeners()
        for links in self._links.values():
            for conn in list(links):
                conn.abort()
        self._links.clear()
        await self.cancel_tasks()
