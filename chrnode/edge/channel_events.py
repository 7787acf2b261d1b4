"""The events and actions of the channel rules (chrnode.edge.channels): plain frozen data."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "Accept",
    "Action",
    "Answer",
    "Answered",
    "Ask",
    "Close",
    "CloseTarget",
    "Event",
    "Join",
    "Key",
    "Leave",
    "Limits",
    "Member",
    "Paused",
    "Plain",
    "Refuse",
    "Resumed",
    "Sent",
    "TargetClosed",
    "Tick",
]

Key = Hashable
Member = Hashable


class Answer(Enum):
    """The target's answer to the channel's first portopen."""

    SHARED = "shared"  # accepted, and takes later openers as members
    PLAIN = "plain"  # accepted as an ordinary port with that opener only
    REFUSED = "refused"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Limits:
    max_members: int = 256
    max_lag: int = 4 * 1024 * 1024  # bytes written to a paused member before it is closed
    slow_timeout: float = 10.0  # seconds a member may stay paused


# ---- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """An ``s`` portopen of ``member`` for channel ``key`` with ``flags``."""

    key: Key
    member: Member
    flags: str


@dataclass(frozen=True, slots=True)
class Answered:
    """The target answered the portopen sent for the Ask of ``key``."""

    key: Key
    answer: Answer


@dataclass(frozen=True, slots=True)
class Leave:
    """``member`` closed its port or left the node (also for a member still waiting)."""

    key: Key
    member: Member


@dataclass(frozen=True, slots=True)
class TargetClosed:
    """The target closed the channel's port or left."""

    key: Key


@dataclass(frozen=True, slots=True)
class Paused:
    """``member``'s connection cannot take more data (its write buffer is over the high water)."""

    key: Key
    member: Member
    now: float


@dataclass(frozen=True, slots=True)
class Resumed:
    key: Key
    member: Member


@dataclass(frozen=True, slots=True)
class Sent:
    """``nbytes`` of the target's data were written to a paused ``member``."""

    key: Key
    member: Member
    nbytes: int


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


Event = Join | Answered | Leave | TargetClosed | Paused | Resumed | Sent | Tick


# ---- actions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ask:
    """Send the target a portopen naming ``member`` (it becomes the owner if the answer is shared)."""

    key: Key
    member: Member


@dataclass(frozen=True, slots=True)
class Accept:
    """``member`` is in: give it its ref (the owner: the target answered shared)."""

    key: Key
    member: Member


@dataclass(frozen=True, slots=True)
class Plain:
    """The target accepted ``member``'s portopen without sharing: an ordinary port."""

    key: Key
    member: Member


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer ``member``'s portopen with an error."""

    key: Key
    member: Member
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close ``member``'s port; ``code`` (notify first) when it is closed for a fault of its own."""

    key: Key
    member: Member
    code: str | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class CloseTarget:
    """The channel ended with members gone: close the port to the target."""

    key: Key


Action = Ask | Accept | Plain | Refuse | Close | CloseTarget
