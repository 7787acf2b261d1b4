"""One channel on the network loop as two port ends of the port table (SPEC 4 ``s``).

    target  <-- the upstream port (ref X) -->  Channel.up
    member  <-- its member port (ref Ri)  -->  Channel.fan      (one per member)

A :class:`Channel` carries bytes (the target's to each reader, the owner's to the target) and
turns what its two sides see (a pause, a port closed) into events for the rules
(chrnode.edge.channels), through the :class:`ChannelOwner` it belongs to
(chrnode.edge.channel_hub.ChannelHub). Neither side is ever asked to open a port.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any, Protocol

from chrnode.crypto import to_hex_address
from chrnode.edge import codes
from chrnode.edge.channels import Channels, Event, Leave, Paused, Resumed, Sent
from chrnode.edge.messages import Message, PortOpen
from chrnode.edge.ports import Frame, Port, PortEnd, PortTable
from chrnode.edge.retag import Retag

__all__ = ["Channel", "ChannelOwner", "Key", "Subscriber"]

_log = logging.getLogger("chrnode.channels")

RECENT_REFS = 64

Key = Any  # (target end, target device, port name): hashable, opaque to the rules


class ChannelOwner(Protocol):
    """What a channel needs of the hub that owns it."""

    table: PortTable
    book: Channels
    paused: set[Subscriber]

    def apply(self, event: Event) -> None: ...

    def now(self) -> float: ...

    def arm_timer(self) -> None: ...

    def target_closed(self, channel: Channel) -> None: ...


class Subscriber:
    """One ``s`` opener: a member of the rules (identity-hashed), and its port once it is in."""

    __slots__ = ("device", "end", "msg", "port", "ref", "what")

    def __init__(self, end: PortEnd, device: bytes, msg: PortOpen, what: str, ref: int) -> None:
        self.end = end
        self.device = device
        self.msg = msg
        self.what = what
        self.ref = ref
        self.port: Port | None = None

    def __repr__(self) -> str:
        return f"Subscriber({to_hex_address(self.device)}, ref {self.ref})"


class _Side:
    """One face of a channel as a port end (chrnode.edge.ports.PortEnd): ``up`` faces the target
    (it is the opener of the upstream port), the other faces the members (their ports' target)."""

    __slots__ = ("channel", "ports", "recent_refs", "up")

    def __init__(self, channel: Channel, up: bool) -> None:
        self.channel = channel
        self.up = up
        self.ports: dict[int, Port] = {}
        self.recent_refs: collections.deque[int] = collections.deque(maxlen=RECENT_REFS)

    @property
    def closed(self) -> bool:
        return self.channel.ended

    @property
    def closing(self) -> bool:
        return self.channel.ended

    def send(self, msg: Message) -> None:
        return None  # portclose from the other side: port_closed below does the channel's part

    def error(self, msg_type: int, request_id: int | None, code: str, message: str) -> None:
        return None

    def warn(self, code: str, message: str) -> None:
        _log.debug("channel %s: %s: %s", self.channel.label, code, message)

    def request(
        self, build: Callable[[int], Message], on_answer: Callable[[Message | None], None], timeout: float
    ) -> None:
        on_answer(None)  # nobody opens a port to a channel through the table

    def forward(self, frame: Frame, port: Port, source: PortEnd) -> None:
        if self.up:
            self.channel.from_target(frame)
        else:
            self.channel.from_member(frame, port)

    def pause_port(self, port: Port) -> None:
        self.channel.flow(port, self.up, paused=True)

    def resume_port(self, port: Port) -> None:
        self.channel.flow(port, self.up, paused=False)

    def port_closed(self, port: Port) -> None:
        self.channel.port_closed(port, self.up)

    def pause(self) -> None:
        # A channel is never paused whole: per-port flow (pause_port above) and the slow-reader
        # rule (docs/protocol.md section 4, Channels) decide what a lagging member costs.
        return None

    def resume(self) -> None:
        return None


class Channel:
    """One open channel: its two sides, the upstream port, members by ref, and what it moved."""

    def __init__(self, hub: ChannelOwner, key: Key, owner: Subscriber, target: PortEnd) -> None:
        self.hub = hub
        self.key = key
        self.owner = owner
        self.target = target
        self.ref = owner.ref  # the upstream port's, shared with the owner's member port
        self.up = _Side(self, up=True)
        self.fan = _Side(self, up=False)
        self.upstream: Port | None = None
        self.by_ref: dict[int, Subscriber] = {}
        self.ended = False
        self.bytes_delivered = 0
        self.frames_delivered = 0
        self.bytes_written = 0  # the owner's bytes to the target
        self.joined_total = 0

    @property
    def label(self) -> str:
        return f"{to_hex_address(self.key[1])} port {self.key[2]!r}"

    def from_target(self, frame: Frame) -> None:
        """The target sent a frame on the channel: to each reader, with its own ref put in."""
        retag = Retag(frame)
        if not retag.valid:
            return  # the table hands over only portsend frames in the usual shape
        size = len(retag.data)
        hub, paused = self.hub, self.hub.paused
        try:
            for member in hub.book.readers(self.key):
                assert isinstance(member, Subscriber)
                port = member.port
                if port is None or member.end.closed:
                    continue
                out = retag.frame_for(port.ref)
                member.end.forward(out, port, self.fan)
                self.frames_delivered += 1
                self.bytes_delivered += size
                if member in paused:
                    hub.apply(Sent(self.key, member, len(out)))
        finally:
            retag.restore()

    def from_member(self, frame: Frame, port: Port) -> None:
        """A member sent on its port: the writer's data goes to the target (on X, as it is)."""
        member = self.by_ref.get(port.ref)
        upstream = self.upstream
        if member is None or upstream is None or self.hub.book.writer(self.key) is not member:
            if member is not None:
                member.end.warn(
                    codes.FORBIDDEN, f"port {port.ref} is a channel's: only its first opener writes"
                )
            return
        self.bytes_written += len(frame)
        self.target.forward(frame, upstream, self.up)  # same ref X both sides: no rewrite

    def flow(self, port: Port, up: bool, paused: bool) -> None:
        if up:
            # The target cannot keep up with the owner's data: pause (resume) the owner's port.
            owner = self.owner
            if owner.port is not None and not owner.end.closed:
                (owner.end.pause_port if paused else owner.end.resume_port)(owner.port)
            return
        member = self.by_ref.get(port.ref)
        if member is None:
            return
        if paused:
            self.hub.paused.add(member)
            self.hub.apply(Paused(self.key, member, self.hub.now()))
            self.hub.arm_timer()
        else:
            self.hub.paused.discard(member)
            self.hub.apply(Resumed(self.key, member))

    def port_closed(self, port: Port, up: bool) -> None:
        table = self.hub.table
        if up:
            self.upstream = None
            if self.owner.port is not None and self.owner.ref in self.by_ref:
                table.reserve(self.ref)  # the owner's port still uses X
            self.hub.target_closed(self)
            return
        member = self.by_ref.pop(port.ref, None)
        if member is None:
            return
        member.port = None
        self.hub.paused.discard(member)
        if port.ref == self.ref and self.upstream is not None:
            table.reserve(self.ref)  # the upstream port still uses X
        self.hub.apply(Leave(self.key, member))

    def describe(self) -> dict[str, Any]:
        members = [
            {"device": to_hex_address(s.device), "ref": s.ref, "flags": s.msg.flags, "owner": s is self.owner}
            for s in list(self.by_ref.values())
        ]
        return {
            "target": to_hex_address(self.key[1]),
            "port": self.key[2],
            "ref": self.ref,
            "members": members,
            "joined_total": self.joined_total,
            "bytes_delivered": self.bytes_delivered,
            "frames_delivered": self.frames_delivered,
            "bytes_written": self.bytes_written,
        }
