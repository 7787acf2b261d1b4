"""Channels: the rules of a node's shared ports (SPEC 4 flag ``s``), pure: events in, actions out.

A channel is one port to a target device that several devices read (Diode's shared ports). It
lives on the node that serves the target. Only portopens with ``s`` and ``r`` are channel opens
(the adapter's ``takes``); a ``ws`` portopen stays an ordinary port, asked of the target. The
first ``s`` opener of (target, port) is asked for as any opener (the target gets a portopen
naming it); if the target's answer says ``shared``, the channel is open and every later ``s``
opener of the same (target, port) *joins* it without a new portopen to the target, with a ref of
its own. The rules, which docs/protocol.md states for device makers:

- Writing: only the channel's *owner* (the first opener, the one device the target consented to
  by address) writes to the target, and only if its flags have ``w``. So everything the target
  reads on the channel's port comes from the device its portopen named. A joiner asks ``rs``;
  a joiner asking ``rws`` is refused ``forbidden``.
- Reading: what the target sends is delivered to every member whose flags have ``r``.
- Leaving: a member's portclose (or its leaving the node) takes it out; the owner leaving does not
  end the channel, which then has no writer. The last member leaving closes the port to the
  target. The target's portclose (or its leaving) closes every member's port (portclose).
- Answers: a target that accepts without ``shared`` gets an ordinary port with that opener, and
  the next waiting ``s`` opener is asked afresh (each opener asked, as without channels). A
  refusal answers the asked opener only: the next waiting one is asked. A timeout fails all
  waiting openers (the target is not answering).
- Limits: at most ``max_members`` members or waiting openers per channel (``busy`` beyond).
- Backpressure: one slow member must stall neither the target nor the other members, so the
  target is never paused for a reader. A member whose connection cannot keep up is marked paused;
  data still written to it while paused is counted, and it is closed with ``too_slow`` once that
  passes ``max_lag`` bytes or it stays paused for ``slow_timeout`` seconds. Memory per member is
  thus bounded by its connection's write buffer plus ``max_lag``.

Keys (a channel) and members are opaque hashable values chosen by the adapter
(chrnode.edge.channel_hub). Nothing here does I/O or reads a clock: times come in events
(chrnode.edge.channel_events, re-exported here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from chrnode.edge import codes
from chrnode.edge.channel_events import (
    Accept,
    Action,
    Answer,
    Answered,
    Ask,
    Close,
    CloseTarget,
    Event,
    Join,
    Key,
    Leave,
    Limits,
    Member,
    Paused,
    Plain,
    Refuse,
    Resumed,
    Sent,
    TargetClosed,
    Tick,
)

__all__ = [
    "Accept",
    "Action",
    "Answer",
    "Answered",
    "Ask",
    "Channels",
    "Close",
    "CloseTarget",
    "Event",
    "Join",
    "Leave",
    "Limits",
    "Paused",
    "Plain",
    "Refuse",
    "Resumed",
    "Sent",
    "TargetClosed",
    "Tick",
]


@dataclass(slots=True)
class _Member:
    flags: str
    paused_at: float | None = None
    lag: int = 0


@dataclass(slots=True)
class _Channel:
    asking: Member | None = None  # the opener whose portopen the target has not answered
    asking_flags: str = ""
    owner: Member | None = None  # set once open
    waiting: dict[Member, str] = dataclasses.field(default_factory=dict)  # member -> flags
    members: dict[Member, _Member] = dataclasses.field(default_factory=dict)
    readers: tuple[Member, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.owner is not None


class Channels:
    """Every channel of one node. ``handle(event)`` returns the actions to carry out, in order."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits if limits is not None else Limits()
        self._channels: dict[Key, _Channel] = {}
        self.slow_closed = 0  # members closed with too_slow

    # ---- queries (the data path asks these per frame) -----------------------------------------

    def readers(self, key: Key) -> tuple[Member, ...]:
        """Members that get what the target sends, in join order."""
        channel = self._channels.get(key)
        return channel.readers if channel is not None else ()

    def writer(self, key: Key) -> Member | None:
        """The one member whose data goes to the target (the owner, if it has ``w`` and is in)."""
        channel = self._channels.get(key)
        if channel is None or channel.owner not in channel.members:
            return None
        return channel.owner if "w" in channel.members[channel.owner].flags else None

    def is_open(self, key: Key) -> bool:
        channel = self._channels.get(key)
        return channel is not None and channel.is_open

    def members(self, key: Key) -> tuple[Member, ...]:
        channel = self._channels.get(key)
        return tuple(channel.members) if channel is not None else ()

    def owner(self, key: Key) -> Member | None:
        channel = self._channels.get(key)
        return channel.owner if channel is not None else None

    def keys(self) -> Iterator[Key]:
        return iter(list(self._channels))

    def __len__(self) -> int:
        return len(self._channels)

    def next_deadline(self) -> float | None:
        """When the earliest paused member runs out of time (for the adapter's timer)."""
        times = [
            m.paused_at
            for c in self._channels.values()
            for m in c.members.values()
            if m.paused_at is not None
        ]
        return min(times) + self.limits.slow_timeout if times else None

    # ---- events ---------------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        if isinstance(event, Join):
            return self._join(event)
        if isinstance(event, Answered):
            return self._answered(event)
        if isinstance(event, Leave):
            return self._leave(event.key, event.member)
        if isinstance(event, TargetClosed):
            return self._target_closed(event.key)
        if isinstance(event, Tick):
            return self._tick(event.now)
        return self._flow(event)

    def _join(self, event: Join) -> list[Action]:
        key, member, flags = event.key, event.member, event.flags
        channel = self._channels.get(key)
        if channel is None:
            self._channels[key] = _Channel(asking=member, asking_flags=flags)
            return [Ask(key, member)]
        if member in channel.members or member in channel.waiting or member == channel.asking:
            return [Refuse(key, member, codes.BAD_PAYLOAD, "this port is already joining the channel")]
        size = len(channel.members) + len(channel.waiting) + (channel.asking is not None)
        if size >= self.limits.max_members:
            limit = self.limits.max_members
            return [
                Refuse(key, member, codes.BUSY, f"the channel has {limit} members, its limit; retry later")
            ]
        if not channel.is_open:
            channel.waiting[member] = flags
            return []
        return self._admit(key, channel, member, flags)

    def _admit(self, key: Key, channel: _Channel, member: Member, flags: str) -> list[Action]:
        if "w" in flags:
            message = (
                "a shared port is written by its first opener only; join it read-only "
                f"(flags 'rs'), not {flags!r}"
            )
            return [Refuse(key, member, codes.FORBIDDEN, message)]
        channel.members[member] = _Member(flags)
        channel.readers = (*channel.readers, member)
        return [Accept(key, member)]

    def _answered(self, event: Answered) -> list[Action]:
        key = event.key
        channel = self._channels.get(key)
        if channel is None or channel.asking is None:
            return []
        asked, channel.asking = channel.asking, None
        if event.answer is Answer.SHARED:
            channel.owner = asked
            channel.members[asked] = _Member(channel.asking_flags)
            actions: list[Action] = [Accept(key, asked)]
            if "r" in channel.members[asked].flags:
                channel.readers = (asked,)
            waiting, channel.waiting = channel.waiting, {}
            for member, flags in waiting.items():
                actions += self._admit(key, channel, member, flags)
            return actions
        if event.answer is Answer.TIMEOUT:
            del self._channels[key]
            message = "the target did not answer the channel's first portopen in time"
            return [Refuse(key, member, codes.TIMEOUT, message) for member in channel.waiting]
        first: list[Action] = [Plain(key, asked)] if event.answer is Answer.PLAIN else []
        return first + self._ask_next(key, channel)

    def _ask_next(self, key: Key, channel: _Channel) -> list[Action]:
        if not channel.waiting:
            del self._channels[key]
            return []
        member = next(iter(channel.waiting))
        channel.asking_flags = channel.waiting.pop(member)
        channel.asking = member
        return [Ask(key, member)]

    def _leave(self, key: Key, member: Member) -> list[Action]:
        channel = self._channels.get(key)
        if channel is None:
            return []
        if channel.waiting.pop(member, None) is not None:
            return []
        if member == channel.asking:
            return []  # its portopen is with the target: the answer settles it (Answered)
        if channel.members.pop(member, None) is None:
            return []
        channel.readers = tuple(m for m in channel.readers if m != member)
        if channel.members or channel.asking is not None:
            return []
        del self._channels[key]
        return [CloseTarget(key)]

    def _target_closed(self, key: Key) -> list[Action]:
        channel = self._channels.pop(key, None)
        if channel is None:
            return []
        message = "the target closed the shared port"
        actions: list[Action] = [Close(key, member) for member in channel.members]
        actions += [Refuse(key, member, codes.NOT_FOUND, message) for member in channel.waiting]
        return actions

    # ---- backpressure ---------------------------------------------------------------------------

    def _flow(self, event: Paused | Resumed | Sent) -> list[Action]:
        channel = self._channels.get(event.key)
        state = channel.members.get(event.member) if channel is not None else None
        if state is None:
            return []
        if isinstance(event, Paused):
            if state.paused_at is None:
                state.paused_at, state.lag = event.now, 0
            return []
        if isinstance(event, Resumed):
            state.paused_at, state.lag = None, 0
            return []
        if state.paused_at is None:
            return []
        state.lag += event.nbytes
        if state.lag <= self.limits.max_lag:
            return []
        message = f"more than {self.limits.max_lag} bytes of the channel waited for this reader; closed"
        return self._too_slow(event.key, event.member, message)

    def _tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        limit = self.limits.slow_timeout
        for key, channel in list(self._channels.items()):
            for member, state in list(channel.members.items()):
                if state.paused_at is not None and now - state.paused_at >= limit:
                    message = f"this reader of the channel could not keep up for {limit:g} s; closed"
                    actions += self._too_slow(key, member, message)
        return actions

    def _too_slow(self, key: Key, member: Member, message: str) -> list[Action]:
        self.slow_closed += 1
        return [Close(key, member, codes.TOO_SLOW, message), *self._leave(key, member)]
