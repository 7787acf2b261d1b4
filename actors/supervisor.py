"""The supervisor actor (SPEC 9): a thin Thespian adapter over `chrnode.supervision.Supervision`.

Every decision (what to start, stop, kill, restart, when to give up) is the pure state machine's.
This actor turns what it sees into the machine's events and carries out its actions:

* `Spawn`: `createActor`, then `Init`; the child's pid is known at once (Thespian forks it here),
  so a child that dies before it says `Started` is seen too;
* liveness: every `LIVENESS_SECONDS` each child's pid is checked (Thespian's `ChildActorExited`
  is a hint, checked against the pid: a late notice can carry a reused address), and every
  `HEARTBEAT_SECONDS` each running child gets a `Ping`; one that has not answered for
  `heartbeat_timeout` seconds (hung, SIGSTOP) is reported `hung`, killed and restarted;
* `StopChild`: `ActorExitRequest` (a supervisor child gets `StopTree` first, so it stops its own
  children last-first), with a timer for the child's shutdown timeout; `Kill`: SIGKILL.

The root supervisor also keeps the registry (name -> address) and the tree table that
`chr_node_info` shows. A name leaves the registry, pushed to every actor at once, as soon as its
actor is known to be going (so asks to it fail fast, `actors/base.py`), and again when its
replacement runs; one broadcast per event, however many names it changed.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import psutil
from thespian.actors import ActorExitRequest, ChildActorExited, WakeupMessage

from actors import messages as m
from actors.base import apply_log_level, import_actor
from actors.registry import RegistryKeeper
from chrnode import supervision as s

START_TIMEOUT = 15.0
LIVENESS_SECONDS = 0.2  # a dead child is seen within this (issue: within 1 s)
HEARTBEAT_SECONDS = 1.0


@dataclass
class ChildProc:
    """The process behind one generation of a child."""

    generation: int
    address: Any
    pid: int
    normal_exit: bool = False  # it said Stopping before exiting
    stop_asked: bool = False  # StopChild was sent: its Exiting counts as its exit
    last_pong: float = 0.0
    running: bool = False


@dataclass(frozen=True)
class _Leaving:
    """A process told to exit: whose it was, its start time (a reused pid is not it), and when
    it is killed if it is still up."""

    name: str
    started: float
    deadline: float


class Supervisor(RegistryKeeper):
    """A supervisor; the root one is the same class, told `StartTree` by the daemon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.machine: s.Supervision | None = None
        self.specs: dict[str, m.ChildSpec] = {}
        self.procs: dict[str, ChildProc] = {}
        self.stop_requester: Any = None
        self.pending_admin: dict[str, list[tuple[Any, Any]]] = {}
        self.spares: dict[str, tuple[Any, int]] = {}  # name -> (address, pid) created ahead, no Init yet
        self.leaving: dict[int, _Leaving] = {}  # pid -> a process told to exit, until it has
        self.heartbeat_timeout = 10.0
        self.exiting = False
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
                self.send(self.owner, m.Started(self.name, os.getpid()))
        elif isinstance(action, s.Stopped):
            if self.stop_requester is not None:
                requester, self.stop_requester = self.stop_requester, None
                self.send(requester, m.TreeStopped())
        elif isinstance(action, s.Escalate):
            self._escalate(action.reason)

    def _create(self, name: str) -> tuple[Any, int]:
        address = self.createActor(import_actor(self.specs[name].actor))
        return address, self._last_child_pid()

    def _spawn(self, action: s.Spawn) -> None:
        spec = self.specs[action.name]
        spare = self.spares.pop(action.name, None)
        if spare is not None and _alive(spare[1]):
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

    def _prepare(self) -> None:
        """Create, ahead of their turn, the processes of the children the plan starts next.

        Forking a process and bringing up its Thespian endpoint is most of a start; doing it for
        all of them at once, while each still gets its Init (and so starts) only after the one
        before it said Started, keeps OTP's order and takes a rest_for_one restart from one fork
        per child in a row to about one (docs/architecture.md, "Restart time")."""
        machine = self.machine
        if machine is None or self.exiting:
            return
        wanted = machine.pending_starts()
        for name in [n for n in self.spares if n not in wanted]:
            address, pid = self.spares.pop(name)
            self.send(address, ActorExitRequest())
            self._leave(name, pid, self.specs[name].shutdown)
        for name in wanted:
            if name not in self.spares and name not in self.procs:
                try:
                    self.spares[name] = self._create(name)
                except Exception:  # its Spawn will try again, and report what fails
                    return
                self.send(self.spares[name][0], m.Preload(self.specs[name]))

    def receiveMsg_Preload(self, msg: m.Preload, sender: Any) -> None:
        # Created ahead of its turn: import what the children need and fork them now, in
        # parallel with the siblings before it; they get their Init only when their turn comes.
        if self.machine is not None or self.exiting:
            return
        self.specs = {c.name: c for c in msg.spec.children}
        for name, spec in self.specs.items():
            if name in self.spares:
                continue
            try:
                self.spares[name] = self._create(name)
            except Exception:  # its Spawn will try again, and report what fails
                return
            self.send(self.spares[name][0], m.Preload(spec))

    def _last_child_pid(self) -> int:
        """The pid of the process `createActor` just forked (Thespian keeps it in the manager)."""
        procs = getattr(getattr(self, "_myRef", None), "_child_procs", None)
        if procs:
            return int(getattr(procs[-1].childProc, "pid", 0) or 0)
        return 0

    def _stop(self, action: s.StopChild) -> None:
        proc = self.procs.get(action.name)
        if proc is None:
            return
        proc.stop_asked = True
        if self.specs[action.name].is_supervisor:
            self.send(proc.address, m.StopTree())  # its children go last-first; then it exits
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
            proc.last_pong = time.monotonic()
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
            proc.last_pong = time.monotonic()

    def receiveMsg_TreeStopped(self, msg: m.TreeStopped, sender: Any) -> None:
        # A supervisor child stopped its children (StopChild); now it exits itself.
        if self._by_address(sender) is not None:
            self.send(sender, ActorExitRequest())

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        # A hint only: Thespian can report an exit late, and a reused port can make the address
        # match the replacement. The pid decides.
        name = self._by_address(msg.childAddress)
        if name is not None and not _alive(self.procs[name].pid):
            self._exited(name)

    def _exited(self, name: str) -> None:
        proc = self.procs.pop(name)
        self._do(s.Exited(name, proc.generation, abnormal=not proc.normal_exit))

    def _check_liveness(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.pid > 0 and not _alive(proc.pid):
                self._exited(name)
        for name, (_, pid) in list(self.spares.items()):
            if not _alive(pid):
                del self.spares[name]

    def _leave(self, name: str, pid: int, grace: float) -> None:
        """`pid` was told to exit: watch it until it has. Thespian keeps an exiting actor's
        process up until each of its children has reported ChildActorExited, and a child that
        died before it connected never does (so a sub-supervisor, or a spare one, told to exit
        can stay up for good, forgotten: seen by tools/chaos as two processes of one name)."""
        try:
            started = float(psutil.Process(pid).create_time()) if pid > 0 else 0.0
        except psutil.Error:
            return  # already gone
        self.leaving[pid] = _Leaving(name, started, time.monotonic() + grace)

    def _end_leaving(self, now: float) -> None:
        """SIGKILL what was told to exit and is still up past its shutdown timeout."""
        for pid, leaving in list(self.leaving.items()):
            try:
                process = psutil.Process(pid)
                same = float(process.create_time()) == leaving.started  # not a reused pid
                up = same and process.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                up = False
            if not up:
                del self.leaving[pid]
            elif now >= leaving.deadline:
                del self.leaving[pid]
                self.log.warning(
                    "%s: %s (pid %d) was told to exit but is still up; killing it",
                    self.name,
                    leaving.name,
                    pid,
                )
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _heartbeat(self, now: float) -> None:
        for name, proc in list(self.procs.items()):
            if not proc.running:
                continue
            if now - proc.last_pong > self.heartbeat_timeout:
                proc.running = False
                self._do(
                    s.HeartbeatMissed(
                        name,
                        proc.generation,
                        f"did not answer a heartbeat within {self.heartbeat_timeout:g} s",
                    )
                )
            else:
                self.send(proc.address, m.Ping())

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        payload = msg.payload
        if payload == "__liveness__":
            if not self.exiting:
                self._check_liveness()
                now = time.monotonic()
                self._end_leaving(now)
                if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
                    self._last_heartbeat = now
                    self._heartbeat(now)
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


def rules_of(spec: m.ChildSpec, config: Any) -> s.Rules:
    """The state machine's rules from a supervisor's ChildSpec (intensity from config unless set)."""
    return s.Rules(
        tuple(
            s.ChildRule(c.name, c.restart, shutdown=c.shutdown, independent=c.independent)
            for c in spec.children
        ),
        strategy=spec.strategy,
        intensity=spec.intensity if spec.intensity is not None else int(getattr(config, "max_restarts", 5)),
        period=spec.period if spec.period is not None else float(getattr(config, "restart_window", 5.0)),
    )


def descendants(spec: m.ChildSpec) -> set[str]:
    out: set[str] = set()
    for child in spec.children:
        out.add(child.name)
        out |= descendants(child)
    return out


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
