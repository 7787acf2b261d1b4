"""Channels on the network loop: the adapter between the port table and the rules (SPEC 4 ``s``).

The rules (who joins, who writes, what is delivered where, when ports close, backpressure) are
chrnode.edge.channels'; this module carries out its actions with the port table's ports. A
channel (chrnode.edge.channel_ends) is two port ends of its own, so the table works unchanged:

    target  <-- the upstream port (ref X) -->  Channel.up
    member  <-- its member port (ref Ri)  -->  Channel.fan      (one per member)

The owner's member port keeps the ref X the target was told (what the owner and, for an owner on
another node, its link know); every joiner gets its own ref (its own ref space, and its session
bills its own bytes). What the target sends on X is written to each reader with its ref put in
(chrnode.edge.retag: in the received buffer, no copy unless a connection must queue it); what
the owner sends on X goes to the target as it is. No byte leaves the network loop.

Only ``s`` portopens that read (``r``), to a target served by this node, make channels
(``takes``): the channel lives on the target's node; on the opener's node a portopen to a remote
target passes through as any (its relay portopen carries the ``s``, so the target's node sees it).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chrnode.edge.channel_ends import Channel, Key, Subscriber
from chrnode.edge.channels import (
    Accept,
    Action,
    Answer,
    Answered,
    Ask,
    Channels,
    Close,
    CloseTarget,
    Event,
    Join,
    Leave,
    Limits,
    Refuse,
    TargetClosed,
    Tick,
)
from chrnode.edge.messages import PORTOPEN, Message, Notify, PortOpen, PortOpenReply
from chrnode.edge.ports import Port, PortEnd, PortTable

if TYPE_CHECKING:
    import asyncio

__all__ = ["ChannelHub"]

_log = logging.getLogger("chrnode.channels")

MAX_LISTED = 100  # channels listed in a status report (the counts cover all)


class ChannelHub:
    """The port table's ChannelHost: every channel of this node, on the network loop."""

    def __init__(
        self,
        table: PortTable,
        loop: Callable[[], asyncio.AbstractEventLoop],
        is_local: Callable[[PortEnd], bool],
        limits: Limits | None = None,
        count_error: Callable[[str], None] | None = None,
    ) -> None:
        self.table = table
        self._count_error = count_error
        self._loop = loop
        self._is_local = is_local
        self.book = Channels(limits)
        self.channels: dict[Key, Channel] = {}
        self._asking: dict[Key, Subscriber] = {}
        self.paused: set[Subscriber] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.opened_total = 0
        self.joined_total = 0
        self.closed_bytes = 0
        self.run = secrets.token_hex(8)  # names this hub's counters: a new one starts at 0 again
        table.channels = self

    def now(self) -> float:
        return self._loop().time()

    # ---- the table's ChannelHost ------------------------------------------------------------

    def takes(self, target: PortEnd, flags: str) -> bool:
        """A channel open: ``s`` with ``r`` (a channel is read; "ws" stays an ordinary port), to
        a target served here (the channel lives on the target's node)."""
        return "s" in flags and "r" in flags and self._is_local(target)

    def open(
        self,
        opener: PortEnd,
        opener_device: bytes,
        target: PortEnd,
        target_device: bytes,
        msg: PortOpen,
        what: str,
        ref: int | None,
    ) -> None:
        if ref is None:
            ref = self.table.new_ref()
        else:
            self.table.reserve(ref)
        key = (target, target_device, msg.port)
        self.apply(Join(key, Subscriber(opener, opener_device, msg, what, ref), msg.flags))

    # ---- carrying out the rules' actions -----------------------------------------------------

    def apply(self, event: Event) -> None:
        for action in self.book.handle(event):
            self._do(action)

    def _do(self, action: Action) -> None:
        member = getattr(action, "member", None)
        assert member is None or isinstance(member, Subscriber)
        if isinstance(action, Ask):
            assert member is not None
            self._ask(action.key, member)
        elif isinstance(action, Accept):
            assert member is not None
            self._accept(action.key, member)
        elif isinstance(action, Refuse):
            assert member is not None
            self.table.release(member.ref)
            if not member.end.closed:
                member.end.error(PORTOPEN, member.msg.id, action.code, f"{member.what}: {action.message}")
        elif isinstance(action, Close):
            assert member is not None
            self._close_member(action, member)
        elif isinstance(action, CloseTarget):
            channel = self.channels.get(action.key)
            if channel is not None:
                self.table.close(channel.up, channel.ref)
        # Plain: the table's own answer handling already opened the ordinary port (_ask).

    def _ask(self, key: Key, member: Subscriber) -> None:
        target: PortEnd = key[0]
        table, msg, ref = self.table, member.msg, member.ref
        self._asking[key] = member
        table.hold(member.end, target)

        def build(request_id: int) -> Message:
            return PortOpen(port=msg.port, device=member.device, flags=msg.flags, ref=ref, id=request_id)

        def on_answer(answer: Message | None) -> None:
            table.settle(member.end, target)
            self._asking.pop(key, None)
            shared = isinstance(answer, PortOpenReply) and bool(answer.shared)
            if shared and not (member.end.closing or target.closed):
                self.apply(Answered(key, Answer.SHARED))
                return
            port = Port(ref, member.end, member.device, target, key[1], msg.port, msg.flags)
            opened = table.answered(port, msg, answer, member.what)
            if not opened:
                table.release(ref)
            outcome = Answer.PLAIN if opened else Answer.TIMEOUT if answer is None else Answer.REFUSED
            self.apply(Answered(key, outcome))

        target.request(build, on_answer, table.open_timeout)

    def _accept(self, key: Key, member: Subscriber) -> None:
        table = self.table
        channel = self.channels.get(key)
        if channel is None:  # the owner: the target answered shared
            target: PortEnd = key[0]
            channel = self.channels[key] = Channel(self, key, member, target)
            flags = "rs" + ("w" if "w" in member.msg.flags else "")
            channel.upstream = Port(channel.ref, channel.up, member.device, target, key[1], key[2], flags)
            table.attach(channel.upstream)
            self.opened_total += 1
            _log.info("channel %s opened by %s", channel.label, member.what)
        if member.end.closing:
            self.table.release(member.ref)
            self.apply(Leave(key, member))
            return
        port = Port(member.ref, member.end, member.device, channel.fan, key[1], key[2], member.msg.flags)
        member.port = port
        channel.by_ref[member.ref] = member
        channel.joined_total += 1
        self.joined_total += 1
        table.attach(port)
        member.end.send(PortOpenReply(ref=member.ref, id=member.msg.id))

    def _close_member(self, action: Close, member: Subscriber) -> None:
        channel = self.channels.get(action.key)
        if action.code is not None:
            _log.info("channel: closing %r: %s", member, action.message)
            if self._count_error is not None:
                self._count_error(action.code)
            member.end.send(Notify(level="warning", code=action.code, message=action.message))
        if channel is not None and member.port is not None:
            self.table.close(channel.fan, member.ref)

    def target_closed(self, channel: Channel) -> None:
        """The upstream port closed (the target's portclose or its leaving, or the last member)."""
        self.apply(TargetClosed(channel.key))
        channel.ended = True
        self.closed_bytes += channel.bytes_delivered
        if self.channels.get(channel.key) is channel:
            del self.channels[channel.key]
        _log.info("channel %s closed (%d bytes delivered)", channel.label, channel.bytes_delivered)

    # ---- slow readers ------------------------------------------------------------------------

    def arm_timer(self) -> None:
        deadline = self.book.next_deadline()
        if deadline is None or (self._timer is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop()
        self._timer_at = deadline
        self._timer = loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.apply(Tick(self.now()))
        self.arm_timer()

    # ---- for operators -----------------------------------------------------------------------

    def status(self, listed: bool = True) -> dict[str, Any]:
        """Counts, and (``listed``) the first MAX_LISTED channels; safe from any thread (copies)."""
        channels = list(self.channels.values())
        out: dict[str, Any] = {
            "run": self.run,
            "channels": len(channels),
            "members": sum(len(c.by_ref) for c in channels),
            "opened_total": self.opened_total,
            "joined_total": self.joined_total,
            "slow_closed": self.book.slow_closed,
            "bytes_delivered": self.closed_bytes + sum(c.bytes_delivered for c in channels),
        }
        if listed:
            out["list"] = [c.describe() for c in channels[:MAX_LISTED]]
        return out
