"""The supervisor actor (SPEC 9): OTP restart types, strategies and intensity on Thespian.

Thespian restarts nothing by itself; it tells a parent `ChildActorExited` when a child process
ends. A `Supervisor` turns that into OTP behaviour:

* children start one at a time, in list order, each after the previous one said `Started`;
* a child that exits without having said `Stopping` first exited abnormally (a crash, a SIGKILL);
* permanent children are always restarted, transient ones after an abnormal exit, temporary never;
* `rest_for_one`: the later siblings are stopped (waiting until they have really exited, so their
  ports are free) and all are started again in order; `one_for_one`: only the child;
* more than `max_restarts` restarts within `restart_window` seconds: the supervisor stops its
  children and exits, so its own parent sees a crash (escalation). The root tells the daemon.

The root supervisor also keeps the registry (name -> address) and the tree table that
`chr_node_info` shows, and pushes both on every change.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import psutil
from thespian.actors import ActorExitRequest, ChildActorExited, WakeupMessage

from actors import messages as m
from actors.base import ChrActor, apply_log_level, import_actor
from chrnode.supervision import Intensity, should_restart

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


@dataclass
class Child:
    spec: m.ChildSpec
    address: Any = None
    pid: int = 0
    state: str = "stopped"  # starting | running | stopping | stopped | failed
    restarts: int = 0
    generation: int = 0
    normal_exit: bool = False  # it said Stopping before exiting
    expect_exit: bool = False  # we asked it to exit
    reason: str = ""


class Supervisor(ChrActor):
    """A supervisor; the root one is the same class, told `StartTree` by the daemon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.children: list[Child] = []
        self.strategy: m.Strategy = "one_for_one"
        self.intensity = Intensity(5, 5.0)
        self.is_root = False
        self.owner: Any = None  # root: the daemon's address; others: the parent supervisor
        self.chain: list[int] = []  # indexes still to (re)start, in order
        self.initial = True
        self.giving_up = ""
        self.stop_requester: Any = None
        self.tree: dict[str, dict[str, Any]] = {}  # root only: every actor of the node
        self.pending_admin: dict[str, list[tuple[Any, int]]] = {}
        self.exiting = False  # told to exit (by its parent or the system's shutdown): restart nothing
        self.daemon_pid = 0  # passed down in Init (Globals names it in the ports file)

    # -- start -------------------------------------------------------------------------------

    def receiveMsg_StartTree(self, msg: m.StartTree, sender: Any) -> None:
        self.is_root = True
        self.owner = sender
        self.name = msg.spec.name
        self.config = msg.config
        self.daemon_pid = msg.daemon_pid
        self.registry = {self.name: self.myAddress}
        self._configure(msg.spec, msg.config)
        self._start_chain(list(range(len(self.children))))

    def receiveMsg_Init(self, msg: m.Init, sender: Any) -> None:
        # A supervisor reports Started only once all its children are up (as OTP's start_link).
        self.name = msg.name
        self.config = msg.config
        self.daemon_pid = msg.daemon_pid
        self.registry = dict(msg.registry)
        self.owner = sender
        assert msg.spec is not None, "a supervisor needs its ChildSpec"
        self._configure(msg.spec, msg.config)
        self._start_chain(list(range(len(self.children))))

    def _configure(self, spec: m.ChildSpec, config: Any) -> None:
        apply_log_level(getattr(config, "log_level", "info"))
        self.log = logging.getLogger(f"chrnode.actor.{self.name}")
        self.strategy = spec.strategy
        self.children = [Child(c) for c in spec.children]
        self.intensity = Intensity(getattr(config, "max_restarts", 5), getattr(config, "restart_window", 5.0))

    def _start_chain(self, indexes: list[int]) -> None:
        self.chain = indexes
        self._advance()

    def _advance(self) -> None:
        while self.chain and not self.giving_up:
            child = self.children[self.chain[0]]
            if child.state in ("stopping", "starting"):
                return  # wait for its exit / its Started
            if child.state == "running":
                self.chain.pop(0)
                continue
            self._spawn(child)
            return
        if not self.chain and self.initial and not self.giving_up:
            self.initial = False
            if self.is_root:
                self.send(self.owner, m.TreeReady(tuple(self.tree)))
            else:
                self.send(self.owner, m.Started(self.name, os.getpid()))

    def _spawn(self, child: Child) -> None:
        child.generation += 1
        child.state = "starting"
        child.normal_exit = child.expect_exit = False
        try:
            child.address = self.createActor(import_actor(child.spec.actor))
        except Exception as exc:  # an import error or a fork failure: a crash like any other
            child.address = None
            self._crashed(child, f"could not create: {exc}")
            return
        self.send(
            child.address,
            m.Init(
                name=child.spec.name,
                config=self.config,
                registry=self.registry,
                parent=self.name,
                spec=child.spec if child.spec.is_supervisor else None,
                daemon_pid=self.daemon_pid,
            ),
        )
        self.wakeupAfter(START_TIMEOUT, payload=("start-timeout", child.spec.name, child.generation))
        self._report(child)

    def receiveMsg_Started(self, msg: m.Started, sender: Any) -> None:
        child = self._by_address(sender)
        if child is None or child.state != "starting":
            return
        child.state = "running"
        child.pid = msg.pid
        child.reason = ""
        self._register(child.spec.name, child.address, msg.pid)
        self._report(child)
        for requester, tag in self.pending_admin.pop(child.spec.name, []):
            self.send(requester, m.AdminReply(tag, True, f"{child.spec.name} restarted", msg.pid))
        self._advance()

    def receiveMsg_InitFailed(self, msg: m.InitFailed, sender: Any) -> None:
        child = self._by_address(sender)
        if child is None:
            return
        self.log.error("%s could not start: %s", msg.name, msg.reason)
        child.reason = msg.reason
        child.expect_exit = False
        self.send(child.address, ActorExitRequest())  # its ChildActorExited drives the restart

    def receiveMsg_Stopping(self, msg: m.Stopping, sender: Any) -> None:
        child = self._by_address(sender)
        if child is not None:
            child.normal_exit = True

    # -- exits -------------------------------------------------------------------------------

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        child = self._by_address(msg.childAddress)
        if child is None:
            return
        asked = child.normal_exit or child.spec.name in self.pending_admin
        if child.state == "running" and not asked and _alive(child.pid):
            # Thespian can report an exit late or twice; if the old process's port was reused,
            # the address matches the new child, which is alive and well: not its exit.
            return
        if child.state == "starting" and not child.reason:
            # Same for a child that has not said Started yet (its pid is unknown). A real crash
            # during start-up is caught by InitFailed (which sets `reason`) or the start timeout.
            self.log.debug("ignoring an exit notice that matches %s while it starts", child.spec.name)
            return
        self._register(child.spec.name, None, 0)
        child.address = None
        if child.expect_exit or self.giving_up or self.stop_requester is not None or self.exiting:
            child.state = "stopped"
            self._report(child)
            self._maybe_finished_stopping()
            self._advance()
            return
        abnormal = not child.normal_exit
        self._crashed(
            child, child.reason or ("exited abnormally" if abnormal else "exited normally"), abnormal
        )

    def _crashed(self, child: Child, reason: str, abnormal: bool = True) -> None:
        name = child.spec.name
        child.state = "stopped"
        child.pid = 0
        child.reason = reason
        if not should_restart(child.spec.restart, abnormal):
            self.log.warning("%s exited (%s); %s, not restarted", name, reason, child.spec.restart)
            self._report(child)
            self._advance()
            return
        admin = name in self.pending_admin
        if not admin and not self.intensity.record(time.monotonic()):
            self._give_up(
                f"{name} needed more than {self.intensity.max_restarts} restarts in "
                f"{self.intensity.window:g} s; last reason: {reason}"
            )
            return
        child.restarts += 1
        self.log.warning("%s exited (%s); restarting (restart %d)", name, reason, child.restarts)
        index = self.children.index(child)
        later: list[int] = []
        if self.strategy == "rest_for_one" and not admin:  # an admin restart is OTP's restart_child
            for j in range(index + 1, len(self.children)):
                sibling = self.children[j]
                if sibling.spec.restart == "temporary" and sibling.state != "running":
                    continue
                later.append(j)
                if sibling.state in ("running", "starting"):
                    sibling.restarts += 1  # restarted along with the crashed one (rest_for_one)
                self._stop_child(sibling)
        self._start_chain(sorted(set([index, *later, *self.chain])))

    def _stop_child(self, child: Child) -> None:
        if child.address is not None and child.state in ("running", "starting"):
            child.expect_exit = True
            child.state = "stopping"
            self.send(child.address, ActorExitRequest())
            self._report(child)

    def _give_up(self, reason: str) -> None:
        self.log.error("%s gives up: %s", self.name, reason)
        self.giving_up = reason
        self.chain = []
        for child in reversed(self.children):
            self._stop_child(child)
        self.wakeupAfter(STOP_TIMEOUT, payload=("stop-timeout",))
        self._maybe_finished_stopping()

    def _maybe_finished_stopping(self) -> None:
        if any(c.state in ("stopping", "starting", "running") for c in self.children):
            return
        if self.stop_requester is not None:
            requester, self.stop_requester = self.stop_requester, None
            self.send(requester, m.TreeStopped())
        elif self.giving_up:
            if self.is_root:
                self.send(self.owner, m.TreeFailed(self.giving_up))
            else:
                self.send(self.myAddress, ActorExitRequest())

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        # Thespian sends ActorExitRequest to each child after this returns.
        self.exiting = True
        self.chain = []
        super().receiveMsg_ActorExitRequest(msg, sender)

    # -- requests -----------------------------------------------------------------------------

    def receiveMsg_StopTree(self, msg: m.StopTree, sender: Any) -> None:
        self.stop_requester = sender
        self.chain = []
        for child in reversed(self.children):
            self._stop_child(child)
        self.wakeupAfter(STOP_TIMEOUT, payload=("stop-timeout",))
        self._maybe_finished_stopping()

    def receiveMsg_RestartActor(self, msg: m.RestartActor, sender: Any) -> None:
        reply_to = msg.reply_to or sender
        for child in self.children:
            if child.spec.name == msg.name:
                if child.address is None or child.state != "running":
                    self.send(reply_to, m.AdminReply(msg.tag, False, f"{msg.name} is {child.state}"))
                    return
                self.pending_admin.setdefault(msg.name, []).append((reply_to, msg.tag))
                self.send(child.address, ActorExitRequest())
                return
        if self.is_root:
            owner = self.tree.get(msg.name, {}).get("parent")
            if owner and owner != self.name and self.registry.get(owner) is not None:
                self.send(self.registry[owner], m.RestartActor(msg.name, reply_to, msg.tag))
                return
        self.send(reply_to, m.AdminReply(msg.tag, False, f"no actor named {msg.name!r}"))

    def receiveMsg_StopNode(self, msg: m.StopNode, sender: Any) -> None:
        if self.is_root:
            self.send(self.owner, msg)

    def receiveMsg_GetTree(self, msg: m.GetTree, sender: Any) -> None:
        self.send(sender, m.TreeSnapshot(tuple(self.tree.values()), dict(self.registry)))

    def receiveMsg_WhereIs(self, msg: m.WhereIs, sender: Any) -> None:
        self.send(sender, m.WhereIsReply(msg.name, self.registry.get(msg.name)))

    def receiveMsg_SetLogLevel(self, msg: m.SetLogLevel, sender: Any) -> None:
        super().receiveMsg_SetLogLevel(msg, sender)
        if self.is_root:
            for name, address in self.registry.items():
                if name != self.name and address is not None:
                    self.send(address, msg)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        payload = msg.payload
        if isinstance(payload, tuple) and payload and payload[0] == "start-timeout":
            _, name, generation = payload
            for child in self.children:
                if child.spec.name == name and child.generation == generation and child.state == "starting":
                    child.reason = f"did not start within {START_TIMEOUT:g} s"
                    if child.address is not None:
                        self.send(child.address, ActorExitRequest())
            return
        if isinstance(payload, tuple) and payload and payload[0] == "stop-timeout":
            for child in self.children:
                if child.state == "stopping":
                    child.state = "stopped"  # it did not answer; Thespian's shutdown will reap it
            self._maybe_finished_stopping()
            return
        super().receiveMsg_WakeupMessage(msg, sender)

    # -- registry and tree ----------------------------------------------------------------------

    def receiveMsg_RegistryUpdate(self, msg: m.RegistryUpdate, sender: Any) -> None:
        # The root owns the registry; an update can only come back to it as an undeliverable
        # message returned by Thespian, carrying an older map.
        if not self.is_root:
            super().receiveMsg_RegistryUpdate(msg, sender)

    def receiveMsg_Registered(self, msg: m.Registered, sender: Any) -> None:
        self._register(msg.name, msg.address, msg.pid)

    def receiveMsg_ChildState(self, msg: m.ChildState, sender: Any) -> None:
        if self.is_root:
            self._tree_update(msg)
        else:
            self.send(self.owner, msg)

    def _register(self, name: str, address: Any, pid: int) -> None:
        if address is None:
            self.registry.pop(name, None)
        else:
            self.registry[name] = address
        if not self.is_root:
            self.send(self.owner, m.Registered(name, address, pid, self.name))
            return
        if address is None:
            # A removal is not pushed: a message to the dead address is lost either way, and the
            # replacement's Started pushes the whole map. One broadcast per restart, not two,
            # keeps the restart path short (each push is a send to every actor).
            return
        update = m.RegistryUpdate(dict(self.registry))
        for other, other_address in self.registry.items():
            if other != self.name:
                self.send(other_address, update)

    def _report(self, child: Child) -> None:
        state = m.ChildState(
            child.spec.name,
            self.name,
            child.state,
            child.restarts,
            child.spec.restart,
            child.pid,
            child.reason,
        )
        if self.is_root:
            self._tree_update(state)
        else:
            self.send(self.owner, state)

    def _tree_update(self, state: m.ChildState) -> None:
        self.tree[state.name] = {
            "name": state.name,
            "parent": state.parent,
            "state": state.state,
            "restarts": state.restarts,
            "restart_type": state.restart_type,
            "pid": state.pid,
            "reason": state.reason,
        }
        self.publish("snapshot", "tree", list(self.tree.values()))

    def _by_address(self, address: Any) -> Child | None:
        for child in self.children:
            if child.address is not None and child.address == address:
                return child
        return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
