"""What a peer link sends, a base of `PeerLink` (chrnode.peer.link): typed messages and frames
already in their final shape, port flow and credit (0x2A-0x2C), answers and error answers to the
peer's requests, and our own requests, each with its id, answered to a callback (``request``) or
to a coroutine (``ask``), which raises :class:`PeerError` on an error answer or none.

`PeerLink` sets the attributes declared on `LinkSending` in its `__init__` and provides
``label()``; the hello, the frames in (the answers to our requests among them) and the faults stay
in chrnode.peer.link, which imports this module, never the other way round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import msgpack

from chrnode.edge import codes
from chrnode.edge.frame import FLAG_ERROR, FLAG_RESPONSE, encode_frame
from chrnode.edge.messages import TYPE_NAMES, ErrorReply, PeerMessage, PortPause, PortResume, encode_message
from chrnode.edge.pending import Pending
from chrnode.edge.tlsconn import TlsConnection
from chrnode.errors import ProtocolError
from chrnode.peer import messages as pm
from chrnode.peer.credit import encode_credit

__all__ = ["LinkSending", "PeerError"]


class PeerError(ProtocolError):
    """A peer answered a request with an error (``code`` is its wire code), or never answered."""


class _LoopHost(Protocol):
    """What the sending side needs of the link's host (a part of chrnode.peer.link's LinkHost)."""

    loop: asyncio.AbstractEventLoop


class _RequestConfig(Protocol):
    """What the sending side reads of the link's config (a part of chrnode.peer.link's LinkConfig)."""

    @property
    def request_timeout(self) -> float: ...


Callback = Callable[[Any], None]


class LinkSending:
    """The sending half of `PeerLink`; the link's `__init__` sets every attribute declared here."""

    host: _LoopHost
    config: _RequestConfig
    conn: TlsConnection | None
    node: bytes | None  # the proven peer, once the hello is done
    closed: bool
    credits: bool  # the peer credits port data (chrnode.peer.credit)
    requests_out: int
    _pending: Pending[Any]

    # -- what PeerLink provides ------------------------------------------------------------------

    def label(self) -> str:
        raise NotImplementedError

    # ---- sending ----------------------------------------------------------------------------
    def _write(self, msg: PeerMessage | ErrorReply | PortPause | PortResume) -> None:
        if self.conn is not None and not self.closed:
            self.conn.write(encode_message(msg))

    def write_frame(self, frame: bytes | bytearray | memoryview) -> None:
        """A frame already in its final shape (the relay's data path)."""
        if self.conn is not None and not self.closed:
            self.conn.write(frame)

    def send_flow(self, ref: int, paused: bool) -> None:
        """Ask the peer to pause (or resume) what it sends us on ``ref`` (0x2A / 0x2B, no id)."""
        if self.node is not None:
            self._write(PortPause(ref=ref) if paused else PortResume(ref=ref))

    def send_credit(self, ref: int, nbytes: int) -> None:
        """Credit the peer ``nbytes`` more of ``ref`` (only on a link whose peer credits)."""
        if self.credits:
            self.write_frame(encode_credit(ref, nbytes))

    def buffered(self) -> int:
        return self.conn.get_write_buffer_size() if self.conn is not None else 0

    def answer(self, request_id: int | None, reply: Any) -> None:
        """Answer a request; ``reply`` is a typed answer, or None for the empty answer ``{}``."""
        if request_id is None:
            return
        if reply is None:
            raise ValueError("use answer_empty(msg_type, request_id) for an empty answer")
        msg_type, fields = pm.to_fields(reply) if not isinstance(reply, pm.Nodes) else pm.nodes_fields(reply)
        self._write(PeerMessage(msg_type, fields, True, request_id))

    def answer_fields(self, msg_type: int, request_id: int | None, fields: dict[str, Any]) -> None:
        """Answer with a plain map (an empty one for STORE/portopen/portclose, MERKLE's {hash})."""
        if request_id is not None:
            self._write(PeerMessage(msg_type, fields, True, request_id))

    def error(self, msg_type: int, request_id: int | None, code: str, message: str) -> None:
        if msg_type in TYPE_NAMES:
            self._write(ErrorReply(msg_type, code, message[:4000], request_id))
        elif self.conn is not None and not self.closed:
            # An unknown type (a newer peer's message): answer it in kind, which the codec will
            # not encode for us (SPEC 4: an error answer where an id can be read).
            fields = {"id": request_id, "code": code, "message": message[:4000]}
            self.conn.write(encode_frame(msg_type & 0xFF, msgpack.packb(fields), FLAG_RESPONSE | FLAG_ERROR))

    def request(self, msg: Any, on_answer: Callback, timeout: float | None = None) -> None:
        """Send a typed request; ``on_answer`` gets the typed answer, an ErrorReply, or None."""
        if self.closed or self.node is None:
            self._pending.call(on_answer, None)
            return
        delay = self.config.request_timeout if timeout is None else timeout
        request_id = self._pending.add(on_answer, delay)
        msg_type, fields = pm.to_fields(msg)
        self.requests_out += 1
        self._write(PeerMessage(msg_type, fields, False, request_id))

    def send(self, msg: Any) -> None:
        """Send a typed message that wants no answer (relay portsend)."""
        if self.node is not None:
            msg_type, fields = pm.to_fields(msg)
            self._write(PeerMessage(msg_type, fields, False, None))

    async def ask(self, msg: Any, timeout: float | None = None) -> Any:
        """``request`` as a coroutine: the typed answer; PeerError on an error answer or no answer."""
        future: asyncio.Future[Any] = self.host.loop.create_future()

        def done(answer: Any) -> None:
            if not future.done():
                future.set_result(answer)

        self.request(msg, done, timeout)
        answer = await future
        if answer is None:
            raise PeerError(f"{self.label()} did not answer", codes.TIMEOUT)
        if isinstance(answer, ErrorReply):
            raise PeerError(f"{self.label()}: {answer.message}", answer.code)
        if isinstance(answer, PeerError):
            raise answer
        return answer

    def pending_count(self) -> int:
        return len(self._pending)
