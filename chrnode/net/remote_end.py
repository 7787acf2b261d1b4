"""The end of a port that speaks for a device on another node (chrnode.net.relay has the whole
picture: the requests each end translates, the credit window, the link's high-water mark).

A :class:`RemoteEnd` is a PortEnd of the port table for a device served over one peer link: what
the table asks of it goes over the link as relay messages, a port frame is sent on in place as
relay portsend, and the source of a port that the link, the peer or the credit window cannot take
is paused, with the data it still has in flight held here up to HOLD_LIMIT.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from chrnode.edge import codes
from chrnode.edge.messages import (
    PORTOPEN,
    ErrorReply,
    Message,
    PortClose,
    PortOpen,
    PortOpenReply,
)
from chrnode.edge.ports import Port, PortEnd, describe
from chrnode.peer import messages as pm
from chrnode.peer.credit import SendWindow
from chrnode.peer.link import PeerLink

__all__ = ["HOLD_LIMIT", "LINK_HIGH_WATER", "RECENT_REFS", "Frame", "RelayHost", "RemoteEnd"]

_log = logging.getLogger("chrnode.relay")

LINK_HIGH_WATER = 4 * 1024 * 1024  # bytes queued on a link before the ports writing into it pause
RECENT_REFS = 64
# Port data a paused source may still have in flight (its kernel's buffers and ours) is held here
# up to this much; beyond it the source's connection is not read until the port gets credit, so
# the rest waits in the kernel (docs/protocol.md: devices keep their unsent data small).
HOLD_LIMIT = 256 * 1024

Frame = bytes | bytearray | memoryview


class RelayHost(Protocol):
    """What an end needs of the relay that made it (chrnode.net.relay.PeerRelay)."""

    faults: collections.Counter[str]
    bytes_out: int

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...
    def route(self, end: RemoteEnd, ref: int) -> None: ...
    def forget(self, end: RemoteEnd, ref: int) -> None: ...
    def sends(self, end: RemoteEnd, ref: int) -> None: ...
    def moved(self, device: bytes) -> None: ...


class RemoteEnd:
    """One remote device's side of its ports, over one peer link (a PortEnd)."""

    __slots__ = (
        "_blocked", "_choked", "_flows", "_held", "_reasons", "device", "link", "ports", "recent_refs",
        "relay", "retarget",
    )  # fmt: skip

    def __init__(
        self,
        relay: RelayHost,
        link: PeerLink,
        device: bytes,
        retarget: Callable[[bytes, bytes], Awaitable[PeerLink | None]] | None = None,
    ) -> None:
        self.relay = relay
        self.link = link
        self.device = device
        # A target's end (made by the resolver): when its node answers not_found (the device
        # moved), look it up afresh and ask its new node, as long as no port uses the old link.
        self.retarget = retarget
        self.ports: dict[int, Port] = {}
        self.recent_refs: collections.deque[int] = collections.deque(maxlen=RECENT_REFS)
        self._blocked: set[Port] = set()  # ports paused at their source until the link drains
        self._held: set[int] = set()  # refs the peer was asked to pause
        self._reasons: dict[Port, set[str]] = {}  # why a port is paused at its source: link, peer, credit
        self._flows: dict[int, SendWindow] = {}  # ref -> what the peer has not credited (credit links)
        self._choked: dict[int, PortEnd] = {}  # ref -> the source whose connection waits for its credit

    def __repr__(self) -> str:
        return f"RemoteEnd({describe(self.device)} via {self.link.label()})"

    @property
    def closed(self) -> bool:
        return self.link.closed

    @property
    def closing(self) -> bool:
        return self.link.closed or self.link.conn is None or self.link.conn.is_closing

    # ---- control ----------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        if isinstance(msg, PortClose):
            self.relay.forget(self, msg.ref)
            flow = self._flows.get(msg.ref)
            if flow is not None and flow.held:
                flow.closing = True  # the portclose follows the frames still waiting for credit
                return
            self._flows.pop(msg.ref, None)
            self.link.send(pm.RelayPortClose(msg.ref))
        elif isinstance(msg, PortOpenReply):
            # We are the opener's end on the target's node: the target accepted; data may follow.
            if msg.ref is not None:
                self.relay.route(self, msg.ref)
            self.link.answer_fields(pm.RELAY_PORTOPEN, msg.id, {})
        else:
            _log.debug("%r: nothing to relay for %s", self, type(msg).__name__)

    def error(self, msg_type: int, request_id: int | None, code: str, message: str) -> None:
        if msg_type == PORTOPEN:
            self.link.error(pm.RELAY_PORTOPEN, request_id, code, message)

    def warn(self, code: str, message: str) -> None:
        self.relay.faults[code] += 1
        _log.debug("%r: %s: %s", self, code, message)

    def request(
        self, build: Callable[[int], Message], on_answer: Callable[[Message | None], None], timeout: float
    ) -> None:
        """The table asks the remote target to accept a port: a relay portopen."""
        msg = build(0)
        if not isinstance(msg, PortOpen) or msg.ref is None or msg.device is None:
            on_answer(None)
            return
        relay_open = pm.RelayPortOpen(msg.ref, msg.device, self.device, msg.port, msg.flags)
        self._open(relay_open, on_answer, timeout, retry=self.retarget is not None)

    def _open(
        self,
        relay_open: pm.RelayPortOpen,
        on_answer: Callable[[Message | None], None],
        timeout: float,
        retry: bool,
    ) -> None:
        ref = relay_open.ref

        def answered(answer: Any) -> None:
            if isinstance(answer, pm.Empty):
                self.relay.route(self, ref)  # before the table opens it: the target may send at once
                on_answer(PortOpenReply(id=None))
                return
            if not isinstance(answer, ErrorReply):
                on_answer(None)
                return
            if answer.code == codes.NOT_FOUND:
                self.relay.moved(self.device)
                if retry and not self.ports and self.retarget is not None:
                    self.relay.spawn(self._moved(relay_open, on_answer, timeout, answer))
                    return
            on_answer(ErrorReply(PORTOPEN, answer.code, answer.message, None))

        self.link.request(relay_open, answered, timeout)

    async def _moved(
        self,
        relay_open: pm.RelayPortOpen,
        on_answer: Callable[[Message | None], None],
        timeout: float,
        answer: ErrorReply,
    ) -> None:
        assert self.retarget is not None
        old = self.link.node
        link = await self.retarget(self.device, old) if old is not None else None
        if link is None or link is self.link or self.ports:
            on_answer(ErrorReply(PORTOPEN, answer.code, answer.message, None))
            return
        _log.info("%s moved to %s; asking there", describe(self.device), link.label())
        self.link = link
        self._open(relay_open, on_answer, timeout, retry=False)

    # ---- data and flow ----------------------------------------------------------------------
    def forward(self, frame: Frame, port: Port, source: PortEnd) -> None:
        """A portsend frame of ``port`` for the remote device: out as relay portsend."""
        if self.link.closed:
            return
        out = frame if not isinstance(frame, bytes) else bytearray(frame)
        out[1] = pm.RELAY_PORTSEND
        if self.link.credits:
            flow = self._flows.get(port.ref)
            if flow is None:
                flow = self._flows[port.ref] = SendWindow()
                self.relay.sends(self, port.ref)
            if not flow.can_send(len(out)):
                # A view points into the reader's scratch buffer: keep a copy of what waits.
                flow.hold(bytearray(out) if isinstance(out, memoryview) else out)
                self._hold_source(port, "credit")
                if flow.held_bytes > HOLD_LIMIT and port.ref not in self._choked:
                    self._choked[port.ref] = source
                    source.pause()
                return
            flow.sent(len(out))
            if flow.blocked:
                self._hold_source(port, "credit")
        self.link.write_frame(out)
        self.relay.bytes_out += len(out)
        if self.link.buffered() > LINK_HIGH_WATER and port not in self._blocked:
            self._blocked.add(port)
            self._hold_source(port, "link")
            if len(self._blocked) == 1:
                self.link.on_drain.append(self._drained)

    def _drained(self) -> None:
        blocked, self._blocked = self._blocked, set()
        for port in blocked:
            self._release_source(port, "link")

    def credited(self, ref: int, nbytes: int) -> None:
        """The peer passed ``nbytes`` of ``ref`` on: send what waited, resume the source."""
        flow = self._flows.get(ref)
        if flow is None:
            return
        for frame in flow.credit(nbytes):
            self.link.write_frame(frame)
            self.relay.bytes_out += len(frame)
        if flow.reopened:
            self._unchoke(ref)
        if flow.closing and not flow.held:
            del self._flows[ref]
            self.link.send(pm.RelayPortClose(ref))
            return
        port = self.ports.get(ref)
        if port is not None and flow.reopened:
            self._release_source(port, "credit")

    def _unchoke(self, ref: int) -> None:
        source = self._choked.pop(ref, None)
        if source is not None:
            source.resume()

    def link_lost(self) -> None:
        """The link is gone: nothing waits for its credit any more."""
        for ref in list(self._choked):
            self._unchoke(ref)
        self._flows.clear()

    def pause(self) -> None:
        return None  # the link is never paused (SPEC 4)

    def resume(self) -> None:
        return None

    def peer_flow(self, port: Port, paused: bool) -> None:
        """The peer asks to pause (port_pause) or resume the data we send it on ``port``."""
        if paused:
            self._hold_source(port, "peer")
        else:
            self._release_source(port, "peer")

    def _hold_source(self, port: Port, reason: str) -> None:
        reasons = self._reasons.setdefault(port, set())
        if not reasons:
            port.other(self).pause_port(port)
        reasons.add(reason)

    def _release_source(self, port: Port, reason: str) -> None:
        reasons = self._reasons.get(port)
        if reasons is None or reason not in reasons:
            return
        reasons.discard(reason)
        if not reasons:
            del self._reasons[port]
            source = port.other(self)
            if not source.closed:
                source.resume_port(port)

    def held_bytes(self) -> int:
        """Port data waiting here for the peer's credit (for the figures)."""
        return sum(flow.held_bytes for flow in self._flows.values())

    def pause_port(self, port: Port) -> None:
        """The local reader of ``port`` cannot keep up: ask the remote source to pause it."""
        if port.ref not in self._held:
            self._held.add(port.ref)
            self.link.send_flow(port.ref, True)

    def resume_port(self, port: Port) -> None:
        if port.ref in self._held:
            self._held.discard(port.ref)
            if port.ref in self.ports:
                self.link.send_flow(port.ref, False)

    def port_closed(self, port: Port) -> None:
        self._blocked.discard(port)
        self._reasons.pop(port, None)
        self._held.discard(port.ref)
        self.relay.forget(self, port.ref)
        flow = self._flows.get(port.ref)
        if flow is not None and not flow.closing:  # closed by the peer: what waits has no reader
            del self._flows[port.ref]
            self._unchoke(port.ref)
