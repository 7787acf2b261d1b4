"""The processes behind a supervisor's children (actors/supervisor.py is the adapter over the
state machine; this is what it keeps about processes and the helpers it builds its rules with).

`ChildProcesses` creates child processes, also ahead of their turn (spares: a rest_for_one
restart forks every child it will start at once, and each gets its `Init` at its `Spawn`);
`alive` is the liveness check by pid that every supervisor runs for each child five times a
second.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import psutil
from thespian.actors import ActorExitRequest

from actors import messages as m
from actors.base import import_actor
from actors.registry import RegistryKeeper
from chrnode import supervision as s


@dataclass
class ChildProc:
    """The process behind one generation of a child."""

    generation: int
    address: Any
    pid: int
    normal_exit: bool = False  # it said Stopping before exiting
    stop_asked: bool = False  # StopChild was sent: its Exiting counts as its exit
    ping_sent: float | None = None  # when the oldest Ping it has not answered was sent
    running: bool = False


@dataclass(frozen=True)
class _Leaving:
    """A process told to exit: whose it was, its start time (a reused pid is not it), and when
    it is killed if it is still up."""

    name: str
    started: float
    deadline: float


class ChildProcesses(RegistryKeeper):
    """The supervisor's children as processes: those running (`procs`) and those created ahead
    (`spares`, no Init yet)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.machine: s.Supervision | None = None
        self.specs: dict[str, m.ChildSpec] = {}
        self.procs: dict[str, ChildProc] = {}
        self.spares: dict[str, tuple[Any, int]] = {}  # name -> (address, pid) created ahead, no Init yet
        self.leaving: dict[int, _Leaving] = {}  # pid -> a process told to exit, until it has
        self.exiting = False

    def _create(self, name: str) -> tuple[Any, int]:
        address = self.createActor(import_actor(self.specs[name].actor))
        return address, self._last_child_pid()

    def _prepare(self) -> None:
        """Create, ahead of their turn, the processes of the children the plan starts next.

        Forking a process and bringing up its Thespian endpoint is most of a start; doing it for
        all of them at once, while each still gets its Init (and so starts) only at its Spawn,
        keeps the order and takes a rest_for_one restart from one fork per child in a row to
        about one (docs/architecture.md, "Restart time")."""
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

    def _last_child_pid(self) -> int:
        """The pid of the process `createActor` just forked (Thespian keeps it in the manager)."""
        procs = getattr(getattr(self, "_myRef", None), "_child_procs", None)
        if procs:
            return int(getattr(procs[-1].childProc, "pid", 0) or 0)
        return 0


def rules_of(spec: m.ChildSpec, config: Any) -> s.Rules:
    """The state machine's rules from a supervisor's ChildSpec (intensity from config unless set)."""
    return s.Rules(
        tuple(
            s.ChildRule(c.name, c.restart, shutdown=c.shutdown, independent=c.independent, needs=c.needs)
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


def alive(pid: int) -> bool:
    """The process runs (a zombie does not). Read from /proc: this runs for every child five
    times a second in every supervisor, and psutil.Process() costs about ten times as much."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            line = stat.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return line[line.rindex(b")") + 2 :][:1] != b"Z"  # the state follows "(comm) "
