"""The device client's side of the TLS connection: frames in, messages to its :class:`LinkOwner`
(the DeviceClient).

Port data (portsend without id) is taken straight out of the frame buffer (one copy, into the
bytes the reader gets); everything else goes through the reference decoder (messages).
"""

from __future__ import annotations

import logging
from typing import Protocol

from chrnode.edge.frame import (
    FLAG_COMPRESSED,
    FLAG_RESPONSE,
    KNOWN_FLAGS,
    Frame,
    decompress_payload,
)
from chrnode.edge.messages import PORTSEND, Message, PortSend, decode_payload
from chrnode.edge.portsend import parse_portsend
from chrnode.edge.reader import FrameReader
from chrnode.edge.tlsconn import TlsConnection
from chrnode.errors import FrameError, RemoteProtocolError

__all__ = ["Link", "LinkOwner"]

_log = logging.getLogger("chrnode.client")


class LinkOwner(Protocol):
    """What the link hands its frames to: the DeviceClient implements it, so that this lower
    module needs nothing of the client (no import cycle)."""

    def data_received(self, ref: int, data: bytes) -> None: ...
    def answer_received(self, msg: Message) -> None: ...
    def request_received(self, msg: Message) -> None: ...
    def connection_lost(self, exc: BaseException | None) -> None: ...
    def writing_paused(self, paused: bool) -> None: ...


class Link(FrameReader):
    """TlsProtocol of a DeviceClient."""

    __slots__ = ("client", "conn")

    def __init__(self, client: LinkOwner, max_frame_size: int) -> None:
        super().__init__(max_frame_size)
        self.client = client
        self.conn: TlsConnection | None = None

    def connection_made(self, conn: TlsConnection) -> None:
        self.conn = conn

    def frame_received(self, msg_type: int, flags: int, frame: bytearray | memoryview) -> None:
        if msg_type == PORTSEND and flags == 0:
            parsed = parse_portsend(frame)
            if parsed is not None:
                ref, start, end = parsed
                self.client.data_received(ref, bytes(frame[start:end]))
                return
        payload = bytes(frame[8:])
        try:
            if flags & ~KNOWN_FLAGS:
                raise RemoteProtocolError(f"frame flags 0x{flags:04x} set reserved bits")
            if flags & FLAG_COMPRESSED:
                payload = decompress_payload(payload, self._rx_max)
                flags &= ~FLAG_COMPRESSED
            msg = decode_payload(Frame(msg_type, flags, payload))
        except RemoteProtocolError as exc:
            _log.warning("node sent a bad frame of type 0x%02x: %s", msg_type, exc)
            return
        if flags & FLAG_RESPONSE:
            self.client.answer_received(msg)
        elif isinstance(msg, PortSend):
            self.client.data_received(msg.ref, msg.data)
        else:
            self.client.request_received(msg)

    def frame_fault(self, error: FrameError) -> None:
        _log.warning("node's frame stream is broken, closing: %s", error)
        if self.conn is not None:
            self.conn.abort(error)

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.stop_frames()
        self.client.connection_lost(exc)

    def pause_writing(self) -> None:
        self.client.writing_paused(True)

    def resume_writing(self) -> None:
        self.client.writing_paused(False)
