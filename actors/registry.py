"""The registry (name -> address) and the tree table, kept by supervisors (SPEC 9).

Every supervisor passes what it learns upward (`Registered`, `ChildState`); the root keeps both
tables, pushes the registry to every actor once per message that changed it (a name that goes is
pushed at once, so asks to it fail fast: actors/base.py), publishes the tree (PubSub topic
`snapshot`, key `tree`) once per message, and answers `GetTree` and `WhereIs`. A sub-supervisor
sends what it says while handling one message upward as one `Upward` (see `_up`).

New names are held back while a restart is starting children (at most `HOLD_ADDITIONS` s): each
child gets the registry of the moment in its `Init`, so one push once the tree is whole replaces
a push to every actor per started child (17 x 17 messages for a whole rest_for_one chain).
"""

from __future__ import annotations

from typing import Any

from thespian.actors import ActorTypeDispatcher

from actors import messages as m
from actors.base import ChrActor

HOLD_ADDITIONS = 0.5  # seconds new names may wait for the restart under way to finish


class RegistryKeeper(ChrActor):
    """The bookkeeping half of a supervisor (actors/supervisor.py holds the supervising half)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.is_root = False
        self.owner: Any = None  # root: the daemon's address; others: the parent supervisor
        self.tree: dict[str, dict[str, Any]] = {}  # root only: every actor of the node
        self.counts: dict[str, tuple[int, int]] = {}  # (restarts, requested) of every descendant
        self.registry_dirty = False
        self.registry_removed = False
        self.tree_dirty = False
        self.hold_timer = False  # a "__registry__" wakeup is due
        self.upward: list[Any] = []  # not the root: for the owner, sent once this message is handled
        self.unbatching = False  # handling an `Upward`: the registry is pushed once at its end

    def receiveMessage(self, message: Any, sender: Any) -> Any:
        answer = super().receiveMessage(message, sender)
        self._flush_upward()
        if self.tree_dirty:  # one tree publish per message, however many rows it changed
            self.tree_dirty = False
            self.publish("snapshot", "tree", list(self.tree.values()))
        return answer

    def receiveMsg_GetTree(self, msg: m.GetTree, sender: Any) -> None:
        self.send(sender, m.TreeSnapshot(tuple(self.tree.values()), dict(self.registry)))

    def receiveMsg_WhereIs(self, msg: m.WhereIs, sender: Any) -> None:
        self.send(sender, m.WhereIsReply(msg.name, self.registry.get(msg.name)))

    # -- registry and tree ----------------------------------------------------------------------

    def receiveMsg_RegistryUpdate(self, msg: m.RegistryUpdate, sender: Any) -> None:
        # The root owns the registry; an update can only come back to it as an undeliverable
        # message returned by Thespian, carrying an older map.
        if not self.is_root:
            super().receiveMsg_RegistryUpdate(msg, sender)

    def receiveMsg_Registered(self, msg: m.Registered, sender: Any) -> None:
        self._register(msg.name, msg.address, msg.pid)
        if not self.unbatching:
            self._flush_registry()

    def receiveMsg_Upward(self, msg: m.Upward, sender: Any) -> None:
        """What a sub-supervisor said while handling one message, in its order."""
        self.unbatching = True
        try:
            for item in msg.messages:
                ActorTypeDispatcher.receiveMessage(self, item, sender)
        finally:
            self.unbatching = False
        self._flush_registry()

    def _up(self, message: Any) -> None:
        """To the owner (not the root), after the message being handled, with everything else
        said to it meanwhile in one `Upward`: each Thespian message to a busy root waits for the
        one before it to be acknowledged, and a sub-supervisor stopping or starting its children
        said three things per child (stopping, the name gone, stopped), one message each."""
        self.upward.append(message)

    def _flush_upward(self) -> None:
        if self.upward and self.owner is not None:
            batch, self.upward = self.upward, []
            self.send(self.owner, batch[0] if len(batch) == 1 else m.Upward(tuple(batch)))

    def receiveMsg_ChildState(self, msg: m.ChildState, sender: Any) -> None:
        self._report(msg)

    def _register(self, name: str, address: Any, pid: int) -> None:
        if address is None and name not in self.registry:
            return
        if address is None:
            self.registry.pop(name, None)
        else:
            self.registry[name] = address
        if not self.is_root:
            self._up(m.Registered(name, address, pid, self.name))
            return
        self.registry_dirty = True
        self.registry_removed = self.registry_removed or address is None

    def _flush_registry(self, force: bool = False) -> None:
        """Push the registry once after each event that changed it (a rest_for_one restart
        removes many names in one event: one broadcast). Additions are pushed too (PubSub and
        others deliver by name, so an actor not in their registry gets nothing), but while
        children are starting only once they are up or HOLD_ADDITIONS has passed."""
        if not self.is_root or not self.registry_dirty:
            return
        if not self.registry_removed and not force and self.starting_children():
            if not self.hold_timer:
                self.hold_timer = True
                self.wakeupAfter(HOLD_ADDITIONS, payload="__registry__")
            return
        self.registry_dirty = self.registry_removed = False
        update = m.RegistryUpdate(dict(self.registry))
        for other, other_address in self.registry.items():
            if other != self.name:
                self.send(other_address, update)

    def starting_children(self) -> bool:
        """A restart is starting children (the supervisor knows; see the module docstring)."""
        return False

    def on_timer(self, payload: Any) -> None:
        if payload == "__registry__":
            self.hold_timer = False
            self._flush_registry(force=True)

    def _report(self, state: m.ChildState) -> None:
        # Counts are remembered on the way up, so a restarted sub-supervisor gets them back.
        self.counts[state.name] = (state.restarts, state.requested)
        if not self.is_root:
            self._up(state)
            return
        last_exit = (self.tree.get(state.name) or {}).get("last_exit", "")
        if state.state in ("hung", "restarting", "stopped") and state.reason:
            last_exit = state.reason  # why it last went down: kept once it runs again
        self.tree[state.name] = {
            "name": state.name,
            "parent": state.parent,
            "state": state.state,
            "restarts": state.restarts,
            "requested_restarts": state.requested,
            "restart_type": state.restart_type,
            "pid": state.pid,
            "reason": state.reason,
            "last_exit": last_exit,
        }
        self.tree_dirty = True  # published once at the end of the message (receiveMessage)
