"""One device connection on the EdgeV2 port: hello, dispatch, answers, backpressure (SPEC 3, 4, 5).

Life of a session:

    TLS handshake (tlsconn) -> connection_made: refused (busy, rate_limited) or wait for hello
    hello within hello_timeout, proof checked (SPEC 3) -> registered as the device's session
    (a previous session of the same device is told `replaced` and closed)
    frames: portsend takes the relay fast path; everything else is decoded (messages) and handled
    a valid ticket within ticket_timeout; ticket_request when usage passes the grace; idle timeout
    connection_lost -> ports closed, pending node requests failed, usage flushed

Faults: a well-delimited bad frame gets an error answer (with its id when readable) and counts a
fault; after MAX_FAULTS in a short time, or any framing-level fault, the connection is closed. No
fault ever raises out of the session into the event loop: other connections never notice.

A session is a port end (chrnode.edge.ports.PortEnd) and knows its server only as a
:class:`SessionHost`, so it imports neither the server nor the handlers.

Backpressure is per port (SPEC 4), in the base class chrnode.edge.flow.PortFlow: a slow reader
pauses each port at its source (``port_pause {ref}`` to a device), never the source's connection,
unless that device ignores the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from chrnode.edge import codes
from chrnode.edge.deadlines import SessionDeadlines
from chrnode.edge.flow import PortFlow
from chrnode.edge.frame import (
    FLAG_COMPRESSED,
    FLAG_RESPONSE,
    KNOWN_FLAGS,
    Frame,
    decompress_payload,
    peek_request_id,
)
from chrnode.edge.messages import (
    NOTIFY,
    PORTSEND,
    ErrorReply,
    Message,
    Notify,
    decode_payload,
    encode_message,
)
from chrnode.edge.pending import Pending
from chrnode.edge.ports import Frame as FrameBytes
from chrnode.edge.ports import Port, PortEnd, PortTable
from chrnode.edge.portsend import parse_portsend
from chrnode.edge.ratelimit import TokenBucket
from chrnode.edge.tlsconn import TlsConnection
from chrnode.errors import FrameError, ProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    import asyncio

    from chrnode.config import Config
    from chrnode.edge.usage import DeviceAccount

__all__ = ["Session", "SessionHost"]

_log = logging.getLogger("chrnode.edge")

MAX_FAULTS = 10  # well-delimited bad frames tolerated in a burst ...
FAULT_RECOVERY = 0.2  # ... forgiven at this rate per second
RECENT_REFS = 16  # closed refs whose late data is dropped silently
HARD_WRITE_LIMIT = 32 * 1024 * 1024  # a device that lets this much pile up is not reading: cut it


class SessionHost(Protocol):
    """What a session needs of the server that hosts it (implemented by EdgeServer)."""

    config: Config
    ports: PortTable

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def count_error(self, code: str) -> None: ...

    def session_started(self, session: Session) -> None: ...

    def session_closing(self, session: Session) -> None:
        """No longer the device's session; its ports end."""
        ...

    def session_ended(self, session: Session) -> None: ...

    def before_hello(self, session: Session, msg: Message) -> None: ...

    def dispatch(self, session: Session, msg: Message) -> None:
        """A request of an authenticated device."""
        ...

    def check_usage(self, session: Session) -> None:
        """Count the session's new bytes against its tickets (SPEC 5)."""
        ...


class Session(PortFlow):
    """The server side of one device connection (a TlsProtocol) and a port end."""

    __slots__ = (
        "_check_at",
        "_counted",
        "_faults",
        "_frame_bucket",
        "_pending",
        "_relay",
        "_throttled",
        "account",
        "closed",
        "compress",
        "conn",
        "deadlines",
        "device",
        "peer",
        "refusal",
        "server",
        "write_paused",
    )

    def __init__(self, server: SessionHost, peer: str, refusal: tuple[str, str] | None = None) -> None:
        super().__init__(server.config.max_frame_size, RECENT_REFS)
        self.server = server
        self._relay = server.ports.relay
        self.peer = peer
        self.refusal = refusal  # (code, message) to notify and close with once TLS is up
        self.conn: TlsConnection | None = None
        self.device: bytes | None = None
        self.account: DeviceAccount | None = None
        self.compress = False
        self.closed = False
        self._pending: Pending[Message] = Pending(server.loop, self._answer_failed)  # node-sent requests
        self._faults: TokenBucket | None = None
        self._frame_bucket: TokenBucket | None = None
        self._throttled = False
        self.write_paused = False
        self.deadlines = SessionDeadlines(server.config)  # hello, idle, tickets (edge/deadlines.py)
        self._counted = 0  # bytes of this connection already added to the account
        self._check_at = 1 << 62  # traffic at which usage is next checked against tickets

    # ---- TlsProtocol ------------------------------------------------------------------------

    def connection_made(self, conn: TlsConnection) -> None:
        self.conn = conn
        self.deadlines.connected(self.server.loop.time())
        self.server.session_started(self)
        if self.refusal is not None:
            code, message = self.refusal
            self.close_with(code, message)

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.stop_frames()
        self._pending.close()
        self.server.session_ended(self)
        self.release_blocked()

    def pause_writing(self) -> None:
        self.write_paused = True

    def _not_reading(self, conn: TlsConnection) -> bool:
        """Cut a device that lets HARD_WRITE_LIMIT bytes pile up (it is not reading at all)."""
        queued = conn.get_write_buffer_size()
        if queued <= HARD_WRITE_LIMIT:
            return False
        _log.info("closing %s: %d bytes queued and not read", self.label(), queued)
        self.server.count_error(codes.BUSY)
        self.stop_frames()
        # Not now: we may be inside a relay loop over this device's ports.
        self.server.loop.call_soon(conn.abort)
        return True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.release_blocked()

    # ---- frames in --------------------------------------------------------------------------

    def frame_received(self, msg_type: int, flags: int, frame: bytearray | memoryview) -> None:
        conn = self.conn
        if conn is not None and conn.bytes_in + conn.bytes_out >= self._check_at:
            self.server.check_usage(self)
        bucket = self._frame_bucket
        over = bucket is not None and not bucket.spend(time.monotonic)
        if msg_type == PORTSEND and flags == 0 and self.device is not None:
            parsed = parse_portsend(frame)
            if parsed is not None:
                if self._held:
                    self.sent_while_paused(parsed[0], len(frame))
                self._relay(self, parsed[0], frame)
                if over:
                    self._throttle()
                return
        try:
            self._frame(msg_type, flags, bytes(frame[8:]), over)
        except ProtocolError as exc:
            self._protocol_error(msg_type, flags, exc)
        except Exception:
            _log.exception("%s: failed to handle a frame of type 0x%02x", self.label(), msg_type)
            self.close_with(codes.INTERNAL_ERROR, "the node failed to handle a frame; reconnect")

    def frame_fault(self, error: FrameError) -> None:
        self.server.count_error(error.code)
        self.error(0, None, error.code, str(error), close=True)

    def _frame(self, msg_type: int, flags: int, payload: bytes, over: bool) -> None:
        if flags & ~KNOWN_FLAGS:
            raise RemoteProtocolError(
                f"frame flags 0x{flags:04x} set reserved bits (only 0x{KNOWN_FLAGS:x} are defined)",
                codes.BAD_FRAME,
                peek_request_id(payload),
            )
        if flags & FLAG_COMPRESSED:
            payload = decompress_payload(payload, self.server.config.max_frame_size)
            flags &= ~FLAG_COMPRESSED
        msg = decode_payload(Frame(msg_type, flags, payload))
        if flags & FLAG_RESPONSE:
            self._answer_received(msg)
            return
        request_id = getattr(msg, "id", None)
        if over:
            if request_id is not None:
                self.server.count_error(codes.RATE_LIMITED)
                self.error(msg_type, request_id, codes.RATE_LIMITED, self._rate_message())
                return
            self._throttle()
        if self.device is None:
            self.server.before_hello(self, msg)
        else:
            self.server.dispatch(self, msg)

    def _answer_received(self, msg: Message) -> None:
        if not self._pending.answer(getattr(msg, "id", None), msg):
            # Never answer an answer (two confused peers would loop); count it as a fault.
            self.fault()

    def _protocol_error(self, msg_type: int, flags: int, exc: ProtocolError) -> None:
        self.server.count_error(exc.code)
        if flags & FLAG_RESPONSE:
            self.fault()
            return
        self.error(msg_type, exc.request_id, exc.code, str(exc), close=self.device is None)
        self.fault()

    def _rate_message(self) -> str:
        rate = self.server.config.frame_rate_per_device
        return f"more than {rate:g} frames per second from this device; slow down"

    # ---- sending ----------------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        conn = self.conn
        if conn is None or self.closed:
            return
        conn.write(encode_message(msg, compress=self.compress))
        if self.write_paused:
            self._not_reading(conn)

    def error(
        self, msg_type: int, request_id: int | None, code: str, message: str, close: bool = False
    ) -> None:
        """An error answer (SPEC 4). Without a readable id it is still sent (id nil) for a request."""
        if msg_type not in range(1, NOTIFY + 1):
            # No answer can be typed for an unknown type: tell the device with a notify instead.
            self.send(Notify(level="error", code=code, message=message[:4000]))
        else:
            self.send(ErrorReply(msg_type, code, message[:4000], request_id))
        if close:
            self.close()

    def warn(self, code: str, message: str) -> None:
        """A fault in a frame that cannot be answered (no id): notify, and count the fault."""
        self.server.count_error(code)
        self.send(Notify(level="warning", code=code, message=message))
        self.fault()

    def close_with(self, code: str, message: str, level: str = "error") -> None:
        """Tell the device why (notify), then close after what is queued is sent."""
        self.server.count_error(code)
        self.send(Notify(level=level, code=code, message=message))
        self.close()

    def close(self) -> None:
        """Stop taking frames, leave the device table and close ports now (peers learn at once),
        then close the connection once what is queued is sent."""
        self.stop_frames()
        self.server.session_closing(self)
        if self.conn is not None:
            self.conn.close()

    @property
    def closing(self) -> bool:
        """Closed, or closing: it takes no new requests or ports."""
        return self.closed or self.conn is None or self.conn.is_closing

    def forward(self, frame: FrameBytes, port: Port, source: PortEnd) -> None:
        """Relay a frame of ``port``; pause that port at ``source`` while this device is not keeping up."""
        conn = self.conn
        if conn is None or self.closed:
            return
        conn.write(frame)
        if conn.bytes_in + conn.bytes_out >= self._check_at:
            self.server.check_usage(self)
        if self.write_paused and source is not self and not self._not_reading(conn):
            self.block(port, source)

    def request(
        self, build: Callable[[int], Message], on_answer: Callable[[Message | None], None], timeout: float
    ) -> None:
        """Send a node-originated request; ``on_answer`` gets the answer, or None on timeout/close."""
        if self.closing:
            self._pending.call(on_answer, None)
            return
        self.send(build(self._pending.add(on_answer, timeout)))

    def _answer_failed(self) -> None:
        _log.exception("%s: answer handler failed", self.label())

    # ---- flow control, faults, limits --------------------------------------------------------

    def _throttle(self) -> None:
        """Over the frame rate without an id to answer: stop reading until the bucket refills."""
        bucket = self._frame_bucket
        if self._throttled or bucket is None:
            return
        self._throttled = True
        self.server.count_error(codes.RATE_LIMITED)
        self.send(Notify(level="warning", code=codes.RATE_LIMITED, message=self._rate_message()))
        self.pause()
        delay = max(bucket.wait_time(time.monotonic()), 0.001)
        self.server.loop.call_later(delay, self._unthrottle)

    def _unthrottle(self) -> None:
        self._throttled = False
        self.resume()

    def fault(self) -> None:
        if self._faults is None:
            self._faults = TokenBucket(FAULT_RECOVERY, MAX_FAULTS, time.monotonic())
        if not self._faults.take(time.monotonic()):
            self.close_with(codes.BAD_FRAME, f"more than {MAX_FAULTS} bad frames in a short time; closing")

    def authenticated(self, device: bytes, account: DeviceAccount, compress: bool) -> None:
        """Hello accepted: from now on frames are rate limited per device and usage is counted."""
        self.device = device
        self.account = account
        self.compress = compress
        config = self.server.config
        now = self.server.loop.time()
        if config.rate_limiting:
            rate = config.frame_rate_per_device
            self._frame_bucket = TokenBucket(rate, max(rate, 1.0), time.monotonic())
        self.deadlines.authenticated(now)

    # ---- usage ------------------------------------------------------------------------------

    def flush_usage(self, epoch: int) -> None:
        conn, account = self.conn, self.account
        if conn is None or account is None:
            return
        total = conn.bytes_in + conn.bytes_out
        if total > self._counted:
            account.add_usage(epoch, total - self._counted)
            self._counted = total

    def next_check(self, step: int) -> None:
        """Check usage again once ``step`` more bytes have moved."""
        self._check_at = self.traffic() + step

    def traffic(self) -> int:
        conn = self.conn
        return conn.bytes_in + conn.bytes_out if conn is not None else 0

    def tick(self, now: float) -> None:
        """The periodic check of this session's deadlines (called by the server's sweep): hello or
        idle first, then usage against tickets (which may send a ticket_request), then the ticket
        deadlines."""
        conn = self.conn
        if conn is None or conn.is_closing:
            return
        expired = self.deadlines.check_presence(now, self.traffic())
        if expired is None and self.device is not None:
            self.server.check_usage(self)
            expired = self.deadlines.check_tickets(now)
        if expired is not None:
            self.close_with(expired.code, expired.message, expired.level)

    def label(self) -> str:
        if self.device is not None:
            return f"device 0x{self.device.hex()} ({self.peer})"
        return f"connection from {self.peer}"
