"""Two links to one peer (two nodes that dial each other at once), pure: which one both keep.

Each node then holds an inbound and an outbound link to the other, and each sees them come up in
its own order (the listener proves a link before its dialer does). Both must keep the same one,
and what ``connect()`` gave a caller must be the one kept, else the caller's requests die with the
duplicate. The rule (issue 10):

- the node with the lower address decides: it keeps the link that came up first *there* and
  closes the second as soon as it is up;
- the node with the higher address follows: if its own outbound link came up first, the lower
  node kept that one too (the lower node proved our link before it could see its own answered,
  and so before its own), and the newcomer is closed; if the peer's inbound link came up first,
  it cannot know which the lower node keeps, so it keeps both, goes on using the first, and
  waits (``settled`` False) until the lower node closes one; a dial waiting for the link is
  given the survivor. A lower node that never chooses is given ``settle_timeout``;
- a link that is closing gives way to the new one; a second link dialled by the same side as the
  first replaces it (that side dialled again: the first is dead to it).

Links are any hashable handle (chrnode.net.peers passes PeerLink); time is an argument.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

__all__ = ["Change", "Keep", "Twins", "choose"]

L = TypeVar("L", bound=Hashable)


class Keep(Enum):
    NEW = "new"
    EXISTING = "existing"
    BOTH = "both"  # the follower waits for the decider to close one


def choose(own: bytes, peer: bytes, existing_ours: bool, existing_closing: bool, new_ours: bool) -> Keep:
    """A second link to ``peer`` came up here while ``existing`` is this node's link to it."""
    if existing_closing or existing_ours == new_ours:
        return Keep.NEW
    if own < peer:  # we decide: the first one up here
        return Keep.EXISTING
    return Keep.EXISTING if existing_ours else Keep.BOTH


@dataclass(frozen=True, slots=True)
class Change(Generic[L]):
    """What ``up`` / ``down`` / ``tick`` decided for one peer.

    ``link``: the peer's link now (None: no link left); ``close``: duplicates to close;
    ``settled``: no second link awaits the decider's choice, so a dial waiting may take ``link``;
    ``became``: ``link`` is newly the peer's link (it was not before this event)."""

    link: L | None
    close: tuple[L, ...] = ()
    settled: bool = True
    became: bool = False


@dataclass(slots=True)
class _Held(Generic[L]):
    link: L
    ours: bool
    since: float


class Twins(Generic[L]):
    """The one link each peer has, and the second one awaiting the decider's choice."""

    def __init__(self, own: bytes, settle_timeout: float = 10.0) -> None:
        self.own = own
        self.settle_timeout = settle_timeout
        self._held: dict[bytes, _Held[L]] = {}
        self._second: dict[bytes, _Held[L]] = {}

    def link(self, peer: bytes) -> L | None:
        held = self._held.get(peer)
        return held.link if held is not None else None

    def second(self, peer: bytes) -> L | None:
        """The second link to ``peer`` awaiting the decider's choice, if any."""
        second = self._second.get(peer)
        return second.link if second is not None else None

    def settled(self, peer: bytes) -> bool:
        return peer not in self._second

    def up(
        self, peer: bytes, link: L, ours: bool, now: float, *, existing_closing: bool = False
    ) -> Change[L]:
        """``link`` to ``peer`` came up here (``ours``: we dialled it)."""
        new = _Held(link, ours, now)
        held = self._held.get(peer)
        if held is None:
            self._held[peer] = new
            return Change(link, became=True)
        close: list[L] = []
        second = self._second.pop(peer, None)
        if second is not None:  # a third link: the one awaiting a choice gives way
            close.append(second.link)
        keep = choose(self.own, peer, held.ours, existing_closing, ours)
        if keep is Keep.NEW:
            self._held[peer] = new
            return Change(link, (*close, held.link), became=True)
        if keep is Keep.EXISTING:
            return Change(held.link, (*close, link))
        self._second[peer] = new
        return Change(held.link, tuple(close), settled=False)

    def down(self, peer: bytes, link: L) -> Change[L]:
        """``link`` to ``peer`` closed (for whatever reason)."""
        held, second = self._held.get(peer), self._second.get(peer)
        if second is not None and second.link == link:
            del self._second[peer]
            return Change(held.link if held is not None else None)
        if held is None or held.link != link:
            return Change(held.link if held is not None else None, settled=second is None)
        if second is not None:  # the decider closed the first: the second is the one kept
            self._held[peer] = self._second.pop(peer)
            return Change(second.link, became=True)
        del self._held[peer]
        return Change(None)

    def tick(self, now: float) -> dict[bytes, Change[L]]:
        """A decider that never chose: keep the first link, close the second."""
        changes: dict[bytes, Change[L]] = {}
        for peer, second in list(self._second.items()):
            if now - second.since >= self.settle_timeout:
                del self._second[peer]
                changes[peer] = Change(self.link(peer), (second.link,))
        return changes
