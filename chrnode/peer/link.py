"""One node <-> node link on the peer port (SPEC 4): the peer hello both ways, then requests and
answers in both directions. A TlsProtocol on chrnode.edge's transport, on the network loop.

Life of a link:

    dialer: TLS up -> the listener's certificate must name the node we meant to reach
            -> send peer hello (id 1) -> its answer names the same node with its own record -> up
    listener: TLS up -> the first frame must be a peer hello proving the dialer's key for this
            session and this listener (SPEC 4) -> answer with our record -> up
    up: requests either way carry ids; answers may come out of order; the host gets each request
        typed (chrnode.peer.messages) and answers it; requests we send get their answer, an error
        answer, or None on timeout / close.

Nothing but a peer hello is accepted before the hello, and a second one is refused. Faults (bad
frames, bad payloads, floods past the per-link rate) get error answers with their codes; a link
that keeps faulting, or faults at the framing level, is closed. Nothing raises into the loop.

What a link sends (typed messages, port flow and credit, answers and error answers, our requests
with their ids, ``ask``) and ``PeerError`` are in chrnode.peer.link_send, a base of `PeerLink`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chrnode.crypto import PrivateKey
from chrnode.edge import codes
from chrnode.edge.bounds import PayloadError, unpack
from chrnode.edge.frame import FLAG_RESPONSE, Frame
from chrnode.edge.messages import ErrorReply, PeerMessage, PortPause, PortResume, decode_payload
from chrnode.edge.pending import Pending
from chrnode.edge.portsend import parse_portsend
from chrnode.edge.ratelimit import TokenBucket
from chrnode.edge.reader import FrameReader
from chrnode.edge.tlsconn import TlsConnection
from chrnode.errors import CryptoError, FrameError, ProtocolError, RemoteProtocolError
from chrnode.identity import node_address_from_cert
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm
from chrnode.peer.budget import LoopBudget
from chrnode.peer.credit import PORT_CREDIT, encode_credit, read_credit
from chrnode.peer.hello import check_peer_hello, check_peer_hello_reply, make_peer_hello
from chrnode.peer.link_send import LinkSending, PeerError

__all__ = ["LinkConfig", "LinkHost", "PeerLink"]

_log = logging.getLogger("chrnode.peer")

HELLO_ID = 1
MAX_FAULTS = 10
FAULT_RECOVERY = 0.2


@dataclass(frozen=True, slots=True)
class LinkConfig:
    hello_timeout: float = 5.0
    request_timeout: float = 5.0
    max_frame_size: int = 1024 * 1024
    requests_per_second: float = 200.0  # per link; a DHT lookup sends a handful
    burst: float = 400.0


class LinkHost(Protocol):
    """What a link needs of the network server that owns it."""

    loop: asyncio.AbstractEventLoop
    key: PrivateKey

    def own_record(self) -> SignedObject: ...

    def link_up(self, link: PeerLink) -> None: ...

    def link_down(self, link: PeerLink) -> None: ...

    def peer_request(self, link: PeerLink, msg: Any, request_id: int | None) -> None:
        """A typed request from the proven peer; answer it with link.answer / link.error."""
        ...

    def relay_frame(self, link: PeerLink, ref: int, frame: bytearray | memoryview) -> None:
        """A relay portsend frame (0x25, no id) on ``ref``: the data path, not decoded. A
        memoryview is valid only during the call; the frame may be changed in place."""
        ...

    def port_flow(self, link: PeerLink, ref: int, paused: bool) -> None:
        """The peer asks to pause (or resume) the data we send it on ``ref`` (0x2A / 0x2B)."""
        ...

    def port_credit(self, link: PeerLink, ref: int, nbytes: int) -> None:
        """The peer credits ``nbytes`` more of ``ref`` (0x2C, chrnode.peer.credit)."""
        ...


class PeerLink(FrameReader, LinkSending):
    """Either end of one peer link."""

    host: LinkHost
    config: LinkConfig

    def __init__(self, host: LinkHost, config: LinkConfig, *, expected: bytes | None = None) -> None:
        super().__init__(config.max_frame_size)
        self.host = host
        self.config = config
        self.expected = expected  # set on the dialing side: the node we meant to reach
        self.conn: TlsConnection | None = None
        self.node: bytes | None = None  # the proven peer, once the hello is done
        self.record: SignedObject | None = None
        self.closed = False
        self.ready: asyncio.Future[PeerLink] = host.loop.create_future()
        self._pending: Pending[Any] = Pending(host.loop, self._answer_failed, last_id=HELLO_ID)
        self._hello_timer: asyncio.TimerHandle | None = None
        self._bucket = TokenBucket(config.requests_per_second, config.burst, time.monotonic())
        self._faults = TokenBucket(FAULT_RECOVERY, MAX_FAULTS, time.monotonic())
        self.requests_in = 0
        self.requests_out = 0
        self.write_paused = False
        self.on_drain: list[Callable[[], None]] = []  # called once when the write buffer drains
        self.credits = False  # the peer credits port data (chrnode.peer.credit): set by its probe
        self.work: LoopBudget | None = getattr(host, "work", None)  # the host's per-iteration budget
        self._backlog = 0  # frames of this link waiting in it

    @property
    def dialer(self) -> bool:
        return self.expected is not None

    def label(self) -> str:
        who = f"0x{self.node.hex()}" if self.node else "unproven peer"
        where = f"{self.conn.peername[0]}:{self.conn.peername[1]}" if self.conn else "?"
        return f"peer {who} ({where})"

    # ---- TlsProtocol ------------------------------------------------------------------------
    def connection_made(self, conn: TlsConnection) -> None:
        self.conn = conn
        self._hello_timer = self.host.loop.call_later(self.config.hello_timeout, self._hello_timed_out)
        if not self.dialer:
            return
        try:
            certified = node_address_from_cert(conn.peer_certificate() or b"")
        except CryptoError as exc:
            self._fail(codes.BAD_SIGNATURE, f"the peer's certificate names no node key: {exc}")
            return
        if certified != self.expected:
            assert self.expected is not None
            self._fail(
                codes.WRONG_DEVICE,
                f"dialled 0x{self.expected.hex()} but the certificate is 0x{certified.hex()}",
            )
            return
        hello = make_peer_hello(self.host.key, conn.channel_binding(), certified, self.host.own_record())
        msg_type, fields = pm.to_fields(hello)
        self._write(PeerMessage(msg_type, fields, False, HELLO_ID))

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.stop_frames()
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        self._pending.close()
        if not self.ready.done():
            self.ready.set_exception(PeerError(f"the link closed before the peer hello: {exc or 'closed'}"))
            self.ready.exception()  # retrieved: a failed dial is reported by its caller
        if self.node is not None:
            self.host.link_down(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drained, self.on_drain = self.on_drain, []
        for callback in drained:
            try:
                callback()
            except Exception:
                _log.exception("%s: drain callback failed", self.label())

    # ---- frames in --------------------------------------------------------------------------
    def frame_received(self, msg_type: int, flags: int, frame: bytearray | memoryview) -> None:
        work = self.work
        if work is None or self.node is None:
            self._frame(msg_type, flags, frame)
        elif not self._backlog and msg_type in (pm.RELAY_PORTSEND, PORT_CREDIT):
            self._frame(msg_type, flags, frame)  # the data path and its credit: at once
        else:
            # Requests and answers take their turn in the network's budget (chrnode.peer.budget);
            # while any wait, so does this link's data, which may depend on them (a portopen).
            self._backlog += 1
            work.submit(
                self._later, msg_type, flags, frame if isinstance(frame, bytearray) else bytearray(frame)
            )

    def _later(self, msg_type: int, flags: int, frame: bytearray) -> None:
        self._backlog -= 1
        if not self.closed and not self._rx_stopped:
            self._frame(msg_type, flags, frame)

    def _frame(self, msg_type: int, flags: int, frame: bytearray | memoryview) -> None:
        if msg_type == pm.RELAY_PORTSEND and flags == 0 and self.node is not None:
            parsed = parse_portsend(frame)  # the relay's data path (SPEC 4): no decode, no copy
            if parsed is not None:
                self.host.relay_frame(self, parsed[0], frame)
                return
        if msg_type == PORT_CREDIT and self.node is not None:
            self._credit_frame(flags, frame)
            return
        try:
            msg = decode_payload(Frame(msg_type, flags, bytes(frame[8:])))
            self._message(msg_type, flags, msg)
        except ProtocolError as exc:
            self._bad_frame(msg_type, flags, exc)
        except Exception:
            _log.exception("%s: failed to handle a frame of type 0x%02x", self.label(), msg_type)
            self._fail(codes.INTERNAL_ERROR, "the node failed to handle a frame")

    def frame_fault(self, error: FrameError) -> None:
        self._fail(error.code, str(error))

    def _message(self, msg_type: int, flags: int, msg: Any) -> None:
        if flags & FLAG_RESPONSE:
            self._answer_received(msg)
            return
        if isinstance(msg, PortPause | PortResume) and self.node is not None:
            self.host.port_flow(self, msg.ref, isinstance(msg, PortPause))
            return
        if not isinstance(msg, PeerMessage):
            raise RemoteProtocolError(
                "device messages are not accepted on the peer port", codes.UNEXPECTED_MESSAGE, msg.id
            )
        if not self._bucket.spend(time.monotonic):
            if msg.id is not None:
                self.error(msg_type, msg.id, codes.RATE_LIMITED, "too many requests on this link; slow down")
            self._count_fault()
            return
        typed = pm.parse(msg_type, msg.fields, response=False, request_id=msg.id)
        if self.node is None:
            self._hello_received(typed, msg.id)
            return
        if isinstance(typed, pm.PeerHello):
            raise RemoteProtocolError(
                "a second peer hello on a proven link", codes.UNEXPECTED_MESSAGE, msg.id
            )
        self.requests_in += 1
        self.host.peer_request(self, typed, msg.id)

    def _credit_frame(self, flags: int, frame: bytearray | memoryview) -> None:
        try:
            kind, value, nbytes = read_credit(unpack(bytes(frame[8:])), flags)
        except (PayloadError, ValueError):
            self._count_fault()
            return
        if kind == "credit":
            if self.credits:
                self.host.port_credit(self, value, nbytes)
        elif kind == "probe":
            self.credits = True  # it credits, so it reads credits: both directions use them
            self.write_frame(encode_credit(0, 0, value, response=True))
        elif kind == "answer":
            self.credits = True

    def _hello_received(self, typed: Any, request_id: int | None) -> None:
        if self.dialer or not isinstance(typed, pm.PeerHello):
            raise RemoteProtocolError(
                "the first frame on a peer link must be a peer hello", codes.HELLO_REQUIRED
            )
        assert self.conn is not None
        check_peer_hello(typed, self.conn.channel_binding(), self.host.key.address, request_id)
        reply = pm.PeerHelloReply(self.host.key.address, pm.MAX_PROTOCOL_VERSION, self.host.own_record())
        self.answer(request_id, reply)
        self._proven(typed.node, typed.record)

    def _answer_received(self, msg: Any) -> None:
        request_id = getattr(msg, "id", None)
        if self.node is None:
            if not self.dialer or request_id != HELLO_ID:
                raise RemoteProtocolError("an answer before the peer hello", codes.HELLO_REQUIRED)
            self._hello_answered(msg)
            return
        if not self._pending.waits(request_id):
            self._count_fault()  # never answer an answer
            return
        if isinstance(msg, PeerMessage):
            try:
                answer = pm.parse(msg.msg_type, msg.fields, response=True, request_id=request_id)
            except ProtocolError as exc:
                self._count_fault()
                answer = PeerError(f"malformed answer: {exc}", exc.code, request_id)
        else:  # ErrorReply (or a device type's answer: refused by parse above for requests)
            answer = msg
        self._pending.answer(request_id, answer)

    def _hello_answered(self, msg: Any) -> None:
        if isinstance(msg, ErrorReply):
            self._fail(msg.code, f"the peer refused our hello: {msg.message}", tell=False)
            return
        if not isinstance(msg, PeerMessage) or msg.msg_type != pm.PEER_HELLO:
            raise RemoteProtocolError(
                "the answer to a peer hello must be a peer hello", codes.UNEXPECTED_MESSAGE
            )
        reply = pm.parse(pm.PEER_HELLO, msg.fields, response=True, request_id=HELLO_ID)
        assert self.expected is not None
        check_peer_hello_reply(reply, self.expected)
        self._proven(reply.node, reply.record)

    def _proven(self, node: bytes, record: SignedObject) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        self.node, self.record = node, record
        if not self.ready.done():
            self.ready.set_result(self)
        # Ask whether the peer credits port data (an error answer: it does not).
        self.write_frame(encode_credit(0, 0, self._pending.next_id()))
        self.host.link_up(self)

    def close(self) -> None:
        self.stop_frames()
        if self.conn is not None:
            self.conn.close()

    # ---- faults -----------------------------------------------------------------------------
    def _hello_timed_out(self) -> None:
        self._hello_timer = None
        if self.node is None:
            self._fail(codes.TIMEOUT, f"no peer hello within {self.config.hello_timeout:g} s")

    def _bad_frame(self, msg_type: int, flags: int, exc: ProtocolError) -> None:
        if self.node is None:
            self._fail(exc.code, str(exc))
            return
        if not flags & FLAG_RESPONSE:
            self.error(msg_type, exc.request_id, exc.code, str(exc))
        self._count_fault()

    def _count_fault(self) -> None:
        if not self._faults.take(time.monotonic()):
            self._fail(codes.BAD_FRAME, f"more than {MAX_FAULTS} faults in a short time")

    def _fail(self, code: str, message: str, *, tell: bool = True) -> None:
        _log.info("closing %s: %s (%s)", self.label(), message, code)
        if tell and not self.dialer and self.node is None:
            self.error(pm.PEER_HELLO, None, code, message)
        self.close()

    def _answer_failed(self) -> None:
        _log.exception("%s: answer handler failed", self.label())
