"""The supervisor actor (SPEC 9): a thin Thespian adapter over `chrnode.supervision.Supervision`.

Every decision (what to start, stop, kill, restart, when to give up) is the pure state machine's.
This actor turns what it sees into the machine's events and carries out its actions:

* `Spawn`: `createActor` (or a process created ahead: actors/supervisor_procs.py), then `Init`;
  the child's pid is known at once, so a child that dies before it says `Started` is seen too;
* liveness: every `LIVENESS_SECONDS` each child's pid is checked (Thespian's `ChildActorExited`
  is a hint, checked against the pid: a late notice can carry a reused address), and every
  `HEARTBEAT_SECONDS` (or half the heartbeat timeout, if shorter) each running child with no
  `Ping` outstanding gets one; a child that leaves a `Ping` unanswered for `heartbeat_timeout`
  seconds (hung, SIGSTOP) is reported `hung`, killed and restarted. The clock runs from the
  unanswered Ping, not from the last answer: a timeout no longer than the ping interval would
  otherwise call a healthy child hung;
* `StopChild`: `ActorExitRequest` (a supervisor child gets `StopTree`: it stops its children,
  then exits), with a timer for the child's shutdown timeout; `Kill`: SIGKILL.

The root supervisor also keeps the registry and the tree table (actors/registry.py).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from thespian.actors import ActorExitRequest, ChildActorExited, WakeupMessage

from actors import messages as m
from actors.base import apply_log_level
from actors.supervisor_procs import ChildProc, ChildProcesses, alive, descendants, rules_of
from chrnode import supervision as s

START_TIMEOUT = 15.0
LIVENESS_SECONDS = 0.2  # a dead child is seen within this (issue: within 1 s)
HEARTBEAT_SECONDS = 1.0


class Supervisor(ChildProcesses):
    """A supervisor; the root one is the same class, told `StartTree` by the daemon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_requester: Any = None
        self.pending_admin: dict[str, list[tuple[Any, Any]]] = {}
        self.heartbeat_timeout = 10.0
        self._events: list[s.Event] = []
        self._handling = False
        self._last_heartbeat = 0.0
        self.daemon_pid = 0  # passed down in Init (Globals names it in the ports file)

    # -- start -------------------------------------------------------------------------------

    def receiveMsg_StartTree(self, msg: m.StartTree, sender: Any) -> None:
        self.is_root = True
        self.owner = sender
        self.name = msg.spec.name
        self.config = msg.config
        self.daemon_pid = msg.daemon_pid
        self.registry = {self.name: self.myAddress}
        self._configure(msg.spec, msg.config, {})

    def receiveMsg_Init(self, msg: m.Init, sender: Any) -> None:
        # A supervisor reports Started only once all its children are up (as OTP's start_link).
        self.name = msg.name
        self.config = msg.config
        self.daemon_pid = msg.daemon_pid
        self.registry = dict(msg.registry)
        self.owner = self.parent_address = sender
        assert msg.spec is not None, "a supervisor needs its ChildSpec"
        self._configure(msg.spec, msg.config, dict(msg.restarts))

    def _configure(self, spec: m.ChildSpec, config: Any, counts: dict[str, tuple[int, int]]) -> None:
        apply_log_level(getattr(config, "log_level", "info"))
        self.log = logging.getLogger(f"chrnode.actor.{self.name}")
        self.heartbeat_timeout = float(getattr(config, "heartbeat_timeout", 10.0))
        self.specs = {c.name: c for c in spec.children}
        self.counts = counts
        self.machine = s.Supervision(rules_of(spec, config), restarts=counts)
        self.wakeupAfter(LIVENESS_SECONDS, payload="__liveness__")
        self._do(s.Start())

    # -- events into the machine, actions out --------------------------------------------------

    def _do(self, event: s.Event) -> None:
        """Feed `event`; actions may produce further events (a failed spawn), handled in turn."""
        self._events.append(event)
        self.log.debug("%s: event %s", self.name, event)
        if self._handling or self.machine is None:
            return
        self._handling = True
        try:
            while self._events:
                for action in self.machine.handle(self._events.pop(0), time.monotonic()):
                    self._carry_out(action)
        finally:
            self._handling = False
        self._prepare()
        self._flush_registry()

    def _carry_out(self, action: s.Action) -> None:
        self.log.debug("%s: %s", self.name, action)
        if isinstance(action, s.Spawn):
            self._spawn(action)
        elif isinstance(action, s.StopChild):
            self._stop(action)
        elif isinstance(action, s.Kill):
            self._kill(action)
        elif isinstance(action, s.Report):
            self._on_report(action)
        elif isinstance(action, s.Refuse):
            for requester, tag in self.pending_admin.pop(action.name, []):
                self.send(requester, m.AdminReply(tag, False, action.reason))
        elif isinstance(action, s.Ready):
            if self.is_root:
                self.send(self.owner, m.TreeReady(tuple(self.tree)))
            else:
                self._up(m.Started(self.name, os.getpid()))  # after the reports it follows
        elif isinstance(action, s.Stopped):
            if self.stop_requester is not None:
                requester, self.stop_requester = self.stop_requester, None
                if not self.is_root and requester == self.owner:
                    # Our supervisor is stopping us (OTP: a supervisor stops its children, then
                    # exits): exit now, saying Exiting, rather than wait to be told again.
                    self.send(self.myAddress, ActorExitRequest())
                else:
                    self.send(requester, m.TreeStopped())
        elif isinstance(action, s.Escalate):
            self._escalate(action.reason)

    def _spawn(self, action: s.Spawn) -> None:
        spec = self.specs[action.name]
        spare = self.spares.pop(action.name, None)
        if spare is not None and alive(spare[1]):
            address, pid = spare
        else:
            try:
                address, pid = self._create(action.name)
            except Exception as exc:  # an import error or a fork failure: a crash like any other
                self.procs.pop(action.name, None)
                self._do(s.InitFailed(action.name, action.generation, f"could not create: {exc}"))
                self._do(s.Exited(action.name, action.generation, True, f"could not create: {exc}"))
                return
        proc = self.procs[action.name] = ChildProc(action.generation, address, pid)
        if self.machine is not None:  # the tree shows the pid of a child that is still starting
            slot = self.machine.slot(action.name)
            self._report(
                m.ChildState(
                    spec.name,
                    self.name,
                    "starting",
                    slot.restarts,
                    spec.restart,
                    proc.pid,
                    "",
                    slot.requested,
                )
            )
        nested = {k: v for k, v in self.counts.items() if k in descendants(spec)}
        self.send(
            address,
            m.Init(
                name=spec.name,
                config=self.config,
                registry=self.registry,
                parent=self.name,
                spec=spec if spec.is_supervisor else None,
                restarts=nested,
                daemon_pid=self.daemon_pid,
            ),
        )
        self.wakeupAfter(START_TIMEOUT, payload=("start-timeout", action.name, action.generation))

    def _stop(self, action: s.StopChild) -> None:
        proc = self.procs.get(action.name)
        if proc is None:
            return
        proc.stop_asked = True
        if self.specs[action.name].is_supervisor:
            self.send(proc.address, m.StopTree())  # it stops its children, then exits
        else:
            self.send(proc.address, ActorExitRequest())
        self.wakeupAfter(action.timeout, payload=("stop-timeout", action.name, action.generation))

    def _kill(self, action: s.Kill) -> None:
        proc = self.procs.get(action.name)
        if proc is None:
            return
        self.log.warning("%s: killing %s (pid %d): %s", self.name, action.name, proc.pid, action.reason)
        if proc.pid > 0:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            self.send(proc.address, ActorExitRequest())
        self._check_liveness()

    def _escalate(self, reason: str) -> None:
        self.log.error("%s gives up: %s", self.name, reason)
        for name in list(self.pending_admin):
            for requester, tag in self.pending_admin.pop(name):
                self.send(requester, m.AdminReply(tag, False, f"{self.name} gave up: {reason}"))
        if self.is_root:
            self.send(self.owner, m.TreeFailed(reason))
        else:
            self.send(self.myAddress, ActorExitRequest())  # no Stopping: the parent sees a crash

    def _on_report(self, report: s.Report) -> None:
        if report.state == "starting":
            return  # `_spawn` reports it, with the new process's pid
        name = report.name
        spec = self.specs[name]
        proc = self.procs.get(name)
        if report.state == "running" and proc is not None:
            proc.running = True
            proc.ping_sent = None
            self._register(name, proc.address, proc.pid)
            for requester, tag in self.pending_admin.pop(name, []):
                self.send(requester, m.AdminReply(tag, True, f"{name} restarted", proc.pid))
        elif report.state != "starting":
            if proc is not None:
                proc.running = False
            self._register(name, None, 0)
        if report.state == "restarting":
            if report.why == "requested":
                self.log.info("%s restarting as requested (admin restart %d)", name, report.requested)
            elif report.why == "strategy":
                self.log.info("%s restarting: %s (%s)", name, report.reason, self.machine_strategy)
            else:
                self.log.warning(
                    "%s exited (%s); restarting (restart %d)", name, report.reason, report.restarts
                )
        elif report.state == "hung":
            # the reason already says "did not answer a heartbeat within N s"
            self.log.error("%s is hung: %s; killing it", name, report.reason)
        elif report.state == "stopped" and report.why == "crash":
            self.log.warning("%s exited (%s); %s, not restarted", name, report.reason, spec.restart)
        self._report(
            m.ChildState(
                name,
                self.name,
                report.state,
                report.restarts,
                spec.restart,
                proc.pid if proc is not None and report.state not in ("stopped", "restarting") else 0,
                report.reason,
                report.requested,
            )
        )

    def starting_children(self) -> bool:
        return self.machine is not None and any(c.status == "starting" for c in self.machine.children)

    @property
    def machine_strategy(self) -> str:
        return self.machine.rules.strategy if self.machine is not None else "?"

    # -- what the children say ------------------------------------------------------------------

    def receiveMsg_Started(self, msg: m.Started, sender: Any) -> None:
        name = self._by_address(sender)
        if name is not None:
            proc = self.procs[name]
            proc.pid = msg.pid or proc.pid
            self._do(s.Started(name, proc.generation))

    def receiveMsg_InitFailed(self, msg: m.InitFailed, sender: Any) -> None:
        name = self._by_address(sender)
        if name is not None:
            self.log.error("%s could not start: %s", msg.name, msg.reason)
            self._do(s.InitFailed(name, self.procs[name].generation, msg.reason))

    def receiveMsg_Stopping(self, msg: m.Stopping, sender: Any) -> None:
        name = self._by_address(sender)
        if name is not None:
            self.procs[name].normal_exit = True

    def receiveMsg_Exiting(self, msg: m.Exiting, sender: Any) -> None:
        # Asked to stop, it has closed its sockets and files: the next stop (or start) need not
        # wait for the process to be reaped, tens of ms each on a loaded machine. A child that
        # crashes instead sends nothing and is seen by its pid.
        name = self._by_address(sender)
        if name is not None and self.procs[name].stop_asked:
            self._leave(name, self.procs[name].pid, self.specs[name].shutdown)
            self._exited(name)

    def receiveMsg_Pong(self, msg: m.Pong, sender: Any) -> None:
        proc = self.procs.get(msg.name)
        if proc is not None and proc.pid == msg.pid:
            proc.ping_sent = None

    def receiveMsg_TreeStopped(self, msg: m.TreeStopped, sender: Any) -> None:
        # A supervisor child that reports its children stopped instead of exiting: make it exit.
        if self._by_address(sender) is not None:
            self.send(sender, ActorExitRequest())

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        # A hint only: Thespian can report an exit late, and a reused port can make the address
        # match the replacement. The pid decides.
        name = self._by_address(msg.childAddress)
        if name is not None and not alive(self.procs[name].pid):
            self._exited(name)

    def _exited(self, name: str) -> None:
        proc = self.procs.pop(name)
        self._do(s.Exited(name, proc.generation, abnormal=not proc.normal_exit))

    def _check_liveness(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.pid > 0 and not alive(proc.pid):
                self._exited(name)
        for name, (_, pid) in list(self.spares.items()):
            if not alive(pid):
                del self.spares[name]

    def _heartbeat(self, now: float, ping: bool) -> None:
        """Report each running child whose oldest unanswered Ping is older than the timeout;
        when `ping`, send a Ping to each running child that has none outstanding."""
        for name, proc in list(self.procs.items()):
            if not proc.running:
                continue
            if proc.ping_sent is not None:
                if now - proc.ping_sent > self.heartbeat_timeout:
                    proc.running = False
                    self._do(
                        s.HeartbeatMissed(
                            name,
                            proc.generation,
                            f"did not answer a heartbeat within {self.heartbeat_timeout:g} s",
                        )
                    )
            elif ping:
                proc.ping_sent = now
                self.send(proc.address, m.Ping())

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        payload = msg.payload
        if payload == "__liveness__":
            if not self.exiting:
                self._check_liveness()
                now = time.monotonic()
                self._end_leaving(now)
                ping = now - self._last_heartbeat >= min(HEARTBEAT_SECONDS, self.heartbeat_timeout / 2)
                if ping:
                    self._last_heartbeat = now
                self._heartbeat(now, ping)
                self.wakeupAfter(LIVENESS_SECONDS, payload="__liveness__")
            return
        if (
            isinstance(payload, tuple)
            and len(payload) == 3
            and payload[0] in ("start-timeout", "stop-timeout")
        ):
            kind, name, generation = payload
            self._do(s.Timeout(name, generation, "start" if kind == "start-timeout" else "stop"))
            return
        super().receiveMsg_WakeupMessage(msg, sender)

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        # Thespian sends ActorExitRequest to each child after this returns; a hung one is killed
        # when this process exits (PR_SET_PDEATHSIG, chrnode/actorsys.py).
        self.exiting = True
        self.machine = None
        self._flush_upward()  # what it reported goes before its Exiting
        super().receiveMsg_ActorExitRequest(msg, sender)

    # -- requests -----------------------------------------------------------------------------

    def receiveMsg_StopTree(self, msg: m.StopTree, sender: Any) -> None:
        self.stop_requester = sender
        if self.machine is None or self.machine.phase == "done":  # nothing left (it gave up)
            self.stop_requester = None
            self.send(sender, m.TreeStopped())
            return
        self._do(s.Stop())

    def receiveMsg_RestartActor(self, msg: m.RestartActor, sender: Any) -> None:
        reply_to = msg.reply_to or sender
        if msg.name in self.specs:
            self.pending_admin.setdefault(msg.name, []).append((reply_to, msg.tag))
            self._do(s.RestartRequest(msg.name))
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

    def receiveMsg_SetLogLevel(self, msg: m.SetLogLevel, sender: Any) -> None:
        super().receiveMsg_SetLogLevel(msg, sender)
        if self.is_root:
            for name, address in self.registry.items():
                if name != self.name and address is not None:
                    self.send(address, msg)

    def _by_address(self, address: Any) -> str | None:
        for name, proc in self.procs.items():
            if proc.address == address:
                return name
        return None
