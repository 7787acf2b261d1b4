"""Limits of the JSON-RPC ports under abuse: timeouts, a connection cap, descriptor exhaustion.

``GuardedHTTPServer`` is Tornado's HTTPServer with three additions, all decided by the pure
policies ``chrnode.edge.admission.Admission`` and ``chrnode.fdlimit.AcceptPause``:

- Deadlines. A connection is *pending* while it sends a request: its headers must arrive within
  ``header_timeout`` of the connection (or of the previous answer on a keep-alive connection) and
  its body within ``body_timeout`` of the headers. One timer a second cuts what is late with a
  408, so a body sent one byte every 15 s holds its descriptor for ``body_timeout`` at most.
  (Tornado's own ``body_timeout`` wraps every body read in a timeout, about 15% of a small
  request, bench/bench_rpc.py; the sweep costs a few dict operations per request.)
- A cap. At most ``max_connections`` connections, and never more than the descriptors allow
  (the soft RLIMIT_NOFILE less a reserve for the actor's own sockets and files). When full, the
  oldest pending connection is closed to make room; a request being answered is never cut. Only
  when every connection is being answered is the newcomer refused with a 503.
- Accept back-off. When ``accept()`` fails for want of descriptors, the listening socket is not
  watched for a while (50 ms doubling to 1 s) instead of spinning; one log line per episode.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tornado import httputil, iostream
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from chrnode.edge.admission import Admission, AdmissionLimits, Refuse
from chrnode.fdlimit import DESCRIPTOR_ERRORS, AcceptPause, nofile_limits

__all__ = ["FD_RESERVE", "GuardedHTTPServer", "RpcLimits"]

log = logging.getLogger("chrnode.rpc")

FD_RESERVE = 64  # descriptors kept for the actor's own sockets, pipes, log and database files
SWEEP_SECONDS = 1.0
ACCEPTS_PER_CALLBACK = 128
PRESSURE_LOG_INTERVAL = 60.0


def _plain_answer(status: str, code: int, message: str) -> bytes:
    body = b'{"error": {"code": %d, "message": "%s"}}\n' % (code, message.encode())
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n"
    return head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body


_REFUSED = _plain_answer("503 Service Unavailable", 503, "too many connections; try again shortly")
_TOO_SLOW = _plain_answer("408 Request Timeout", 408, "the request did not arrive in time")


@dataclass(frozen=True)
class RpcLimits:
    max_connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def effective_cap(self) -> int:
        """The cap, lowered to what the descriptor limit leaves after FD_RESERVE."""
        soft, _hard = nofile_limits()
        return max(1, min(self.max_connections, soft - FD_RESERVE))


class GuardedHTTPServer(HTTPServer):
    """HTTPServer with the limits of the module docstring; call ``guard()`` before add_sockets."""

    def guard(self, limits: RpcLimits) -> None:
        self.limits = limits
        self.cap = limits.effective_cap()
        self.admission: Admission[iostream.IOStream] = Admission(
            AdmissionLimits(max_connections=self.cap, pending_timeout=limits.header_timeout)
        )
        self.io_loop = IOLoop.current()
        self.in_body: set[iostream.IOStream] = set()  # connections whose request body is arriving
        self._sweeping = self.io_loop.call_later(SWEEP_SECONDS, self._sweep)

    # ---- accept -----------------------------------------------------------------------------

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = _AcceptLoop(self.io_loop, sock, self._handle_connection).stop

    def handle_stream(self, stream: iostream.IOStream, address: tuple[Any, ...]) -> None:
        ip = address[0] if isinstance(address, tuple) and address else ""
        decision = self.admission.accept(stream, str(ip), self.io_loop.time())
        if isinstance(decision, Refuse):
            self._log_pressure()
            _answer_and_close(stream, _REFUSED)
            return
        for victim in decision.shed:
            victim.close()
        if decision.shed:
            self._log_pressure()
        super().handle_stream(stream, address)

    # ---- request phases ---------------------------------------------------------------------

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        stream: iostream.IOStream = server_conn.stream  # type: ignore[attr-defined]
        self.admission.pending(stream, self.io_loop.time())  # the headers of the next request
        return _Phases(super().start_request(server_conn, request_conn), self, stream)

    def on_close(self, server_conn: object) -> None:
        stream = server_conn.stream  # type: ignore[attr-defined]
        self.in_body.discard(stream)
        self.admission.closed(stream)
        super().on_close(server_conn)

    def _sweep(self) -> None:
        expired = self.admission.tick(self.io_loop.time())
        for stream in expired:
            if stream in self.in_body or _has_unparsed_bytes(stream):
                _answer_and_close(stream, _TOO_SLOW)
            else:
                # An idle keep-alive connection: an unasked-for 408 could be read as the answer
                # to a request the client sends at this very moment, so close silently (nginx).
                stream.close()
        self._log_pressure()
        self._sweeping = self.io_loop.call_later(SWEEP_SECONDS, self._sweep)

    def _log_pressure(self) -> None:
        report = self.admission.pressure_report(self.io_loop.time(), PRESSURE_LOG_INTERVAL)
        if report is not None:
            shed, refused, expired = report
            log.warning(
                "JSON-RPC under pressure: %d slow requests cut (headers %g s, body %g s), %d idle or "
                "unfinished connections shed and %d refused at the cap of %d since the last report",
                expired,
                self.limits.header_timeout,
                self.limits.body_timeout,
                shed,
                refused,
                self.cap,
            )

    async def close_all_connections(self) -> None:
        self.io_loop.remove_timeout(self._sweeping)
        await super().close_all_connections()


class _Phases(httputil.HTTPMessageDelegate):
    """Moves a connection from reading headers to reading the body to being answered."""

    def __init__(
        self, inner: httputil.HTTPMessageDelegate, server: GuardedHTTPServer, stream: iostream.IOStream
    ) -> None:
        self._inner = inner
        self._server = server
        self._stream = stream

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        admission = self._server.admission
        if headers.get("Content-Length", "0") not in ("", "0") or "Transfer-Encoding" in headers:
            admission.pending(self._stream, self._server.io_loop.time(), self._server.limits.body_timeout)
            self._server.in_body.add(self._stream)
        else:
            admission.authenticated(self._stream)  # no body: the request is complete
        return self._inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        self._server.in_body.discard(self._stream)
        self._server.admission.authenticated(self._stream)  # being answered: never cut
        self._inner.finish()

    def on_connection_close(self) -> None:
        self._inner.on_connection_close()


def _has_unparsed_bytes(stream: iostream.IOStream) -> bool:
    """Whether part of a request's headers has arrived (Tornado's read buffer; if Tornado ever
    renames it, every late request gets its 408, the safe side)."""
    return bool(getattr(stream, "_read_buffer_size", 1))


def _answer_and_close(stream: iostream.IOStream, answer: bytes) -> None:
    """Best effort: a short answer fits the socket buffer, so it leaves before the close."""
    try:
        stream.write(answer)
    except iostream.StreamClosedError:
        pass
    stream.close()


class _AcceptLoop:
    """Accepts on ``sock`` like tornado.netutil.add_accept_handler, backing off on EMFILE."""

    def __init__(
        self, io_loop: IOLoop, sock: socket.socket, callback: Callable[[socket.socket, Any], None]
    ) -> None:
        self._loop = io_loop
        self._sock = sock
        self._callback = callback
        self._pause = AcceptPause()
        self._watching = False
        self._timer: object | None = None
        self._stopped = False
        self._port = sock.getsockname()[1]
        self._watch()

    def _watch(self) -> None:
        self._timer = None
        if not self._stopped and not self._watching:
            self._loop.add_handler(self._sock, self._on_readable, IOLoop.READ)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_handler(self._sock)
            self._watching = False

    def stop(self) -> None:
        self._stopped = True
        self._unwatch()
        if self._timer is not None:
            self._loop.remove_timeout(self._timer)
            self._timer = None

    def _on_readable(self, _fd: Any, _events: int) -> None:
        for _ in range(ACCEPTS_PER_CALLBACK):
            if self._stopped:
                return
            try:
                conn, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in DESCRIPTOR_ERRORS:
                    log.warning("accept on JSON-RPC port %d failed: %s", self._port, exc)
                    return
                self._back_off(exc)
                return
            ended = self._pause.succeeded(self._loop.time()) if self._pause.in_episode else None
            if ended is not None:
                log.warning(
                    "JSON-RPC port %d accepts again; it was out of descriptors for %.1f s "
                    "(%d accepts failed)",
                    self._port,
                    ended[1],
                    ended[0],
                )
            self._callback(conn, address)

    def _back_off(self, exc: OSError) -> None:
        delay, starts = self._pause.failed(self._loop.time())
        if starts:
            soft, _hard = nofile_limits()
            log.warning(
                "JSON-RPC port %d is out of descriptors (%s, limit %d): pausing accept, retrying "
                "every %g-%g s; connections wait in the backlog",
                self._port,
                errno.errorcode.get(exc.errno or 0, exc),
                soft,
                self._pause.first,
                self._pause.longest,
            )
        self._unwatch()
        self._timer = self._loop.call_later(delay, self._watch)
