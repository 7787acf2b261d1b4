"""The JSON-RPC API over HTTP(S) with Tornado (SPEC 8, 12): a thin adapter over chrnode.rpc.jsonrpc.

    POST /rpc, POST /   JSON-RPC 2.0 (Content-Type is not checked; the body must be JSON)
    GET /metrics        Prometheus text format (chrnode.metrics_prometheus)
    GET /health         the five layers as JSON; 200 when none is down, else 503 (chrnode.health)
    anything else       404 or 405 with a JSON body saying what exists

Admin methods need the token of ``<data_dir>/.cookie``, like bitcoind's: ``Authorization: Bearer
<token>``, or HTTP basic auth with user ``__cookie__`` and the token as password. It is compared
with hmac.compare_digest. An empty token disables admin methods.

A body over ``max_body`` is refused from its Content-Length, before it is read: the connection is
taken over, a 413 with a JSON-RPC -32600 error is written, what the client still sends is
discarded (bounded) so it can read that answer, and the connection is closed. A chunked body has
no length up front; Tornado's own ``max_body_size`` (the same limit) cuts it off with a 400.

Everything here runs on the IOLoop of the thread that calls start_servers; the RPC actor owns
that thread (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import os
import secrets
import ssl
from collections.abc import Callable, Mapping, Sequence
from http.client import responses as http_reasons
from pathlib import Path
from typing import Any, cast

import tornado.web
from tornado import httputil, iostream
from tornado.http1connection import HTTP1Connection
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from chrnode import held_ports
from chrnode.errors import ConfigError
from chrnode.health import HealthLimits, compute_health
from chrnode.metrics_prometheus import MetricsExporter
from chrnode.rpc.admin import AdminOps
from chrnode.rpc.api import NodeView, build_methods
from chrnode.rpc.guard import GuardedHTTPServer, RpcLimits
from chrnode.rpc.jsonrpc import Dispatcher, Method
from chrnode.rpc.wire import encode_json

log = logging.getLogger("chrnode.rpc")

COOKIE_USER = "__cookie__"
_LINGER_BYTES = 16 * 1024 * 1024  # discard at most this much of a refused body ...
_LINGER_SECONDS = 5.0  # ... for at most this long, then close
_background: set[asyncio.Future[None]] = set()

RequestObserver = Callable[[str, int, float], None]
"""Called after every request with (path, HTTP status, seconds): the actor feeds its Stats."""


def write_cookie(path: Path) -> str:
    """Create a new admin token in `path` as ``__cookie__:<token>`` (mode 0600); return the token."""
    token = secrets.token_hex(32)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{COOKIE_USER}:{token}\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError("cookie", str(path), "data_dir", f"a writable file ({exc.strerror})") from exc
    return token


def read_cookie(path: Path) -> str:
    """The admin token in `path` (written by write_cookie)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("cookie", str(path), "data_dir", "a readable file written by the node") from exc
    user, sep, token = text.partition(":")
    if user != COOKIE_USER or not sep or not token:
        raise ConfigError("cookie", str(path), "data_dir", f"one line '{COOKIE_USER}:<token>'")
    return token


def is_admin_header(authorization: str | None, token: str) -> bool:
    """True when the Authorization header carries the admin token (Bearer or basic __cookie__)."""
    if not authorization or not token:
        return False
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer":
        given = value
    elif scheme == "basic":
        try:
            user, _, given = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            return False
        if user != COOKIE_USER:
            return False
    else:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


class _Context:
    """What every handler needs, built once per application."""

    def __init__(
        self, dispatcher: Dispatcher, view: NodeView, admin_token: str, health_limits: HealthLimits
    ) -> None:
        self.dispatcher = dispatcher
        self.view = view
        self.admin_token = admin_token
        self.health_limits = health_limits
        self.metrics = MetricsExporter(lambda: view.snapshot, health=self.health)

    def health(self, snapshot: Mapping[str, Any]) -> dict[str, Any]:
        return compute_health(snapshot, now=self.view.clock(), limits=self.health_limits)


class _JsonHandler(tornado.web.RequestHandler):
    """Errors as JSON, never Tornado's HTML page."""

    def initialize(self, ctx: _Context) -> None:
        self.ctx = ctx

    def compute_etag(self) -> None:
        return None  # every answer is live data; hashing it per request buys nothing

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            message = (
                f"method {self.request.method} is not allowed on {self.request.path[:200]}; "
                "use POST for /rpc and /, GET for /metrics and /health"
            )
        else:
            message = http_reasons.get(status_code, "error")
        self.set_header("Content-Type", "application/json")
        self.finish(encode_json({"error": {"code": status_code, "message": message}}))


class RpcHandler(_JsonHandler):
    async def post(self) -> None:
        auth = self.request.headers.get("Authorization")
        is_admin = auth is not None and is_admin_header(auth, self.ctx.admin_token)
        answer = await self.ctx.dispatcher.dispatch_body(self.request.body, is_admin=is_admin)
        if answer is None:
            self.set_status(204)  # notifications only: nothing to send (JSON-RPC 2.0 section 6)
            return
        self.set_header("Content-Type", "application/json")
        self.finish(answer)


class MetricsHandler(_JsonHandler):
    def get(self) -> None:
        self.set_header("Content-Type", self.ctx.metrics.content_type)
        self.finish(self.ctx.metrics.render())


class HealthHandler(_JsonHandler):
    def get(self) -> None:
        report = self.ctx.health(self.ctx.view.snapshot)
        self.set_status(503 if report["status"] == "down" else 200)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(encode_json(report))


class NotFoundHandler(_JsonHandler):
    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.finish(
            encode_json(
                {
                    "error": {
                        "code": 404,
                        "message": f"no such endpoint: {self.request.method} {self.request.path[:200]}; "
                        "the node serves POST /rpc, POST /, GET /metrics and GET /health",
                    }
                }
            )
        )


class RpcApplication(tornado.web.Application):
    """An Application that refuses oversized bodies from their Content-Length, unread."""

    def __init__(self, ctx: _Context, observer: RequestObserver | None) -> None:
        routes: list[Any] = [
            (r"/rpc", RpcHandler, {"ctx": ctx}),
            (r"/", RpcHandler, {"ctx": ctx}),
            (r"/metrics", MetricsHandler, {"ctx": ctx}),
            (r"/health", HealthHandler, {"ctx": ctx}),
        ]
        super().__init__(
            routes,
            default_handler_class=NotFoundHandler,
            default_handler_args={"ctx": ctx},
            log_function=self._log_request,
            compress_response=False,
        )
        self.ctx = ctx
        self.dispatcher = ctx.dispatcher
        self.view = ctx.view
        self.max_body = ctx.dispatcher.max_body
        self._observer = observer

    def _log_request(self, handler: tornado.web.RequestHandler) -> None:
        status = handler.get_status()
        if self._observer is not None:
            self._observer(handler.request.path, status, handler.request.request_time())
        if status >= 500:
            log.warning("%s %s answered %d", handler.request.method, handler.request.path[:200], status)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return _BodyLimit(super().start_request(server_conn, request_conn), request_conn, self)


class _BodyLimit(httputil.HTTPMessageDelegate):
    """Looks at Content-Length before Tornado reads the body (SPEC 8: bounded requests)."""

    def __init__(
        self, inner: httputil.HTTPMessageDelegate, conn: httputil.HTTPConnection, app: RpcApplication
    ) -> None:
        self._inner = inner
        self._conn = conn
        self._app = app

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        length = headers.get("Content-Length")
        if length is not None and length.isascii() and length.isdigit():
            size = int(length)
            if size > self._app.max_body and isinstance(self._conn, HTTP1Connection):
                self._refuse(size)
                return None
        return self._inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        self._inner.finish()

    def on_connection_close(self) -> None:
        self._inner.on_connection_close()

    def _refuse(self, size: int) -> None:
        conn = cast(HTTP1Connection, self._conn)
        peer = conn.context
        log.info("refused a %d-byte request body from %s (rpc_max_body = %d)", size, peer, self._app.max_body)
        body = self._app.dispatcher.too_large(size).encode()
        head = (
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        )
        stream = conn.detach()  # allowed during headers_received; Tornado stops reading
        task = asyncio.ensure_future(_answer_and_linger(stream, head + body, min(size, _LINGER_BYTES)))
        _background.add(task)
        task.add_done_callback(_background.discard)


async def _answer_and_linger(stream: iostream.IOStream, data: bytes, budget: int) -> None:
    """Send the answer, then discard what the client is still sending, so that closing does not
    reset the connection before it has read the answer (a lingering close, as in Apache)."""

    async def drain() -> None:
        left = budget
        while left > 0:
            left -= len(await stream.read_bytes(65536, partial=True))

    try:
        await stream.write(data)
        await asyncio.wait_for(drain(), _LINGER_SECONDS)
    except (iostream.StreamClosedError, TimeoutError, OSError, ssl.SSLError):
        pass
    finally:
        stream.close()


def make_app(
    view: NodeView,
    admin: AdminOps,
    *,
    admin_token: str,
    max_body: int = 1048576,
    max_batch: int = 100,
    health_limits: HealthLimits | None = None,
    extra_methods: Sequence[Method] = (),
    observer: RequestObserver | None = None,
) -> RpcApplication:
    """The Tornado application of the RPC ports. `max_body`/`max_batch` are rpc_max_body and
    rpc_max_batch of the config."""
    limits = health_limits or HealthLimits()
    methods = build_methods(view, admin, health_limits=limits, extra=extra_methods)
    dispatcher = Dispatcher(methods, max_body=max_body, max_batch=max_batch)
    return RpcApplication(_Context(dispatcher, view, admin_token, limits), observer)


def _listen(
    app: RpcApplication, port: int, bind: str, ssl_ctx: ssl.SSLContext | None, limits: RpcLimits
) -> tuple[HTTPServer, int]:
    try:
        # The daemon's held sockets when it holds this port (chrnode.held_ports), else new ones.
        sockets = held_ports.take(bind, port) or bind_sockets(port, address=bind)
        for sock in sockets:
            sock.setblocking(False)
    except OSError as exc:
        key = "rpcs_port" if ssl_ctx else "rpc_port"
        raise ConfigError(key, port, f"bind {bind}", f"a free port ({exc.strerror})") from exc
    # No body_timeout: Tornado wraps every body read in gen.with_timeout, which costs about 15%
    # of a small request (measured with bench/bench_rpc.py, SPEC 13). The header and body
    # deadlines are kept by GuardedHTTPServer's sweep instead (chrnode.rpc.guard).
    server = GuardedHTTPServer(
        app,
        ssl_options=ssl_ctx,
        max_body_size=app.max_body,
        idle_connection_timeout=120.0,
        decompress_request=False,
    )
    server.guard(limits)
    server.add_sockets(sockets)
    bound = int(sockets[0].getsockname()[1])
    log.info(
        "JSON-RPC listening on %s:%d (%s), at most %d connections",
        bind,
        bound,
        "https" if ssl_ctx else "http",
        server.cap,
    )
    return server, bound


def start_servers(
    app: RpcApplication,
    http_port: int | None,
    https_port: int | None = None,
    bind: str = "127.0.0.1",
    ssl_ctx: ssl.SSLContext | None = None,
    limits: RpcLimits | None = None,
) -> tuple[HTTPServer | None, HTTPServer | None, tuple[int | None, int | None]]:
    """Listen on HTTP and/or HTTPS; a port of None leaves that one out, port 0 lets the OS pick.
    HTTPS needs `ssl_ctx`; `limits` are the connection cap and timeouts (rpc_* config keys).
    Returns the servers and the ports actually bound. Call on the IOLoop thread: the servers
    register with the current loop."""
    limits = limits or RpcLimits()
    http_server = https_server = None
    http_bound = https_bound = None
    if http_port is not None:
        http_server, http_bound = _listen(app, http_port, bind, None, limits)
    if https_port is not None:
        if ssl_ctx is None:
            raise ConfigError("rpcs_port", https_port, "start_servers", "an SSL context to serve HTTPS with")
        https_server, https_bound = _listen(app, https_port, bind, ssl_ctx, limits)
    return http_server, https_server, (http_bound, https_bound)
