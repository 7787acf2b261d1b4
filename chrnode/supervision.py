"""The supervisor's decisions (SPEC 9) as a pure state machine: events in, actions out (h11 style).

`Supervision` knows nothing of processes, Thespian or clocks. Its adapter (actors/supervisor.py)
turns what it sees into events (a child said Started, its process is gone, a timer fired, a
heartbeat went unanswered, an admin asked for a restart) and carries out the actions it gets back
(spawn a child, ask it to stop, kill it, report a state change, escalate to the parent).

OTP's rules, as implemented here:

* children start in list order, each only after the elder siblings it needs said `Started`
  (OTP's start_link, where every child needs all its elders: the default). A child that names
  fewer (`ChildRule.needs`) may start alongside the siblings it does not need; two children
  start at the same time only when neither needs the other;
* permanent children are always restarted, transient ones only after an abnormal exit, temporary
  ones never; a child that is not restarted leaves its siblings alone;
* strategies: `one_for_one` restarts the child; `rest_for_one` also stops the children after it
  (last first) and starts them again in order; `one_for_all` does that with every child. A
  temporary sibling that such a restart stops is not started again. A child marked `independent`
  (no later sibling needs it) is restarted under rest_for_one as if it sat under a one_for_one
  supervisor of its own (docs/architecture.md, "Blast radius"), and so its restarts count
  against an intensity of its own: only when that is exceeded (that supervisor would exit) does
  one count against this supervisor's;
* stopping goes last child first: each child is asked to stop (`StopChild`, with its own
  shutdown timeout), and a child still there when that timeout fires (`Timeout(kind="stop")`) is
  killed; a child is stopped only once every sibling being stopped that needs it is gone (by
  default every later one: strictly sequential, as OTP), and no start begins while a stop is
  under way;
* intensity: more than `intensity` restarts within `period` seconds and the supervisor stops every
  child and escalates (once) to its parent;
* a child that fails its start, misses its start timeout or its heartbeat is killed, and its exit
  is then a crash like any other;
* an admin restart (`RestartRequest`) is OTP's restart_child: only that child, asked to stop
  gracefully, counted as requested (not a crash, not against the intensity);
* every event names the child's `generation` (one per spawn): an event about an earlier process
  of the child (a late exit notice, a Pong from a dead process) is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from chrnode.supervision_events import (
    Action,
    ChildRule,
    ChildStatus,
    Escalate,
    Event,
    Exited,
    HeartbeatMissed,
    InitFailed,
    Intensity,
    Kill,
    Ready,
    Refuse,
    Report,
    RestartRequest,
    RestartType,
    Rules,
    Spawn,
    Start,
    Started,
    Stop,
    StopChild,
    Stopped,
    Strategy,
    Timeout,
    should_restart,
)

__all__ = [
    "Action",
    "ChildRule",
    "ChildSlot",
    "ChildStatus",
    "Escalate",
    "Event",
    "Exited",
    "HeartbeatMissed",
    "InitFailed",
    "Intensity",
    "Kill",
    "Ready",
    "Refuse",
    "Report",
    "RestartRequest",
    "RestartType",
    "Rules",
    "Spawn",
    "Start",
    "Started",
    "Stop",
    "StopChild",
    "Stopped",
    "Strategy",
    "Supervision",
    "Timeout",
    "should_restart",
]


@dataclass
class ChildSlot:
    rule: ChildRule
    status: ChildStatus = "stopped"
    generation: int = 0
    restarts: int = 0  # crash restarts (and restarts along with a crashed sibling)
    requested: int = 0  # admin restarts
    reason: str = ""
    crash_pending: bool = False  # killed or failed: its exit is a crash
    restart_after_stop: bool = False  # an admin restart: start it again once it is gone
    finished: bool = False  # not to be started again (temporary gone, transient done)


@dataclass
class Supervision:
    """One supervisor's state. `handle(event, now)` returns the actions to carry out, in order."""

    rules: Rules
    restarts: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # carried over a restart
    phase: Literal["idle", "starting", "running", "stopping", "escalating", "done"] = "idle"
    escalation: str = ""

    def __post_init__(self) -> None:
        self.children = [ChildSlot(rule) for rule in self.rules.children]
        for slot in self.children:
            slot.restarts, slot.requested = self.restarts.get(slot.rule.name, (0, 0))
        self.intensity = Intensity(self.rules.intensity, self.rules.period)
        # The independent children's own intensities (the one_for_one supervisor each stands for).
        self._own = {
            i: Intensity(self.rules.intensity, self.rules.period)
            for i, slot in enumerate(self.children)
            if slot.rule.independent and self.rules.strategy == "rest_for_one"
        }
        self.to_stop: list[int] = []  # in stop order (last child first)
        self.to_start: list[int] = []  # ascending
        self._index = {c.rule.name: i for i, c in enumerate(self.children)}
        self._needs = [self.rules.needs(i) for i in range(len(self.children))]

    # -- queries ---------------------------------------------------------------------------------

    def slot(self, name: str) -> ChildSlot:
        return self.children[self._index[name]]

    def pending_starts(self) -> list[str]:
        """Children the plan will start, in order (none while stopping or giving up): an adapter
        may create their processes ahead, as long as each gets its Init only at its `Spawn`."""
        if self.phase in ("stopping", "escalating", "done"):
            return []
        return [
            self.children[i].rule.name
            for i in self.to_start
            if self.children[i].status == "stopped" and not self.children[i].finished
        ]

    @property
    def busy(self) -> bool:
        """A restart (or start, or stop) is under way."""
        return bool(self.to_stop or self.to_start) or any(
            c.status in ("starting", "stopping", "killing") for c in self.children
        )

    # -- the one entry point ---------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        out: list[Action] = []
        if isinstance(event, Start):
            if self.phase == "idle":
                self.phase = "starting"
                self.to_start = [i for i in range(len(self.children))]
        elif isinstance(event, Stop):
            if self.phase not in ("stopping", "done"):
                self._stop_all("stopping")
        elif isinstance(event, RestartRequest):
            self._restart_request(event, out)
        else:
            slot = self._current(event.name, event.generation)
            if slot is None:
                return []  # about an earlier process of the child, or a name we do not have
            if isinstance(event, Started):
                if slot.status == "starting":
                    slot.status = "running"
                    slot.reason = ""
                    out.append(self._report(slot, "running"))
            elif isinstance(event, Exited):
                self._exited(slot, event, now, out)
            elif isinstance(event, InitFailed):
                if slot.status == "starting":
                    self._kill(slot, f"could not start: {event.reason}", out)
            elif isinstance(event, Timeout):
                if event.kind == "start" and slot.status == "starting":
                    self._kill(slot, "did not start in time", out)
                elif event.kind == "stop" and slot.status == "stopping":
                    slot.status = "killing"
                    reason = f"did not stop within {slot.rule.shutdown:g} s"
                    out.append(Kill(slot.rule.name, slot.generation, reason))
            elif isinstance(event, HeartbeatMissed):
                if slot.status == "running":
                    slot.reason = event.reason
                    out.append(self._report(slot, "hung", event.reason, why="crash"))
                    self._kill(slot, event.reason, out)
        self._advance(out)
        return out

    # -- rules -----------------------------------------------------------------------------------

    def _current(self, name: str, generation: int) -> ChildSlot | None:
        index = self._index.get(name)
        if index is None:
            return None
        slot = self.children[index]
        if slot.generation != generation or slot.status == "stopped":
            return None
        return slot

    def _kill(self, slot: ChildSlot, reason: str, out: list[Action]) -> None:
        slot.reason = reason
        slot.crash_pending = True
        slot.status = "killing"
        out.append(Kill(slot.rule.name, slot.generation, reason))

    def _exited(self, slot: ChildSlot, event: Exited, now: float, out: list[Action]) -> None:
        index = self._index[slot.rule.name]
        crash = slot.crash_pending
        abnormal = event.abnormal or crash
        reason = slot.reason if crash else (event.reason or ("exited abnormally" if abnormal else "exited"))
        asked = slot.status in ("stopping", "killing") and not crash
        slot.status = "stopped"
        slot.crash_pending = False
        if asked or index in self.to_stop or self.phase in ("stopping", "escalating", "done"):
            # We asked it to go (or were about to): a stop, not a crash.
            if index in self.to_stop:
                self.to_stop.remove(index)
            if slot.restart_after_stop:
                slot.restart_after_stop = False
                slot.requested += 1
                self._add_start([index])
                out.append(self._report(slot, "restarting", "restart requested", why="requested"))
                return
            if slot.rule.restart == "temporary" and index not in self.to_start:
                slot.finished = True
            out.append(self._report(slot, "stopped", slot.reason, why="shutdown"))
            return
        slot.reason = reason
        if not should_restart(slot.rule.restart, abnormal):
            slot.finished = True
            if index in self.to_start:
                self.to_start.remove(index)
            out.append(self._report(slot, "stopped", reason, why="crash" if abnormal else ""))
            return
        if not self._record_restart(index, now):
            self.escalation = (
                f"{slot.rule.name} needed more than {self.intensity.max_restarts} restarts in "
                f"{self.intensity.window:g} s; last reason: {reason}"
            )
            out.append(self._report(slot, "stopped", reason, why="crash"))
            self._stop_all("escalating")
            return
        slot.restarts += 1
        slot.restart_after_stop = False
        out.append(self._report(slot, "restarting", reason, why="crash"))
        group = self._group(index)
        for j in reversed(group):
            if j == index:
                continue
            sibling = self.children[j]
            if sibling.status in ("starting", "running", "stopping", "killing") and j not in self.to_stop:
                self.to_stop.append(j)
        restart = [index]
        for j in group:
            if j == index:
                continue
            sibling = self.children[j]
            if sibling.rule.restart == "temporary":
                if sibling.status != "stopped":
                    sibling.finished = True  # stopped by this restart, never started again
                continue
            if sibling.finished and sibling.rule.restart != "permanent":
                sibling.finished = False  # OTP starts a terminated transient child again here
            if sibling.status != "stopped" or j not in self.to_start:
                sibling.restarts += 1
                out.append(self._report(sibling, "restarting", f"{slot.rule.name} restarted", why="strategy"))
            restart.append(j)
        self._add_start(restart)

    def _record_restart(self, index: int, now: float) -> bool:
        """Count a crash restart of child `index`; False when this supervisor must give up.

        An independent child stands for a one_for_one supervisor of its own holding it (docs/
        architecture.md, "Blast radius"): its restarts count there first, and only one past that
        supervisor's intensity (it would exit, and be restarted afresh) counts here. Otherwise
        quick crashes of unrelated independent actors (Stats, Cron, Connectivity) would add up
        to the root giving up, which the supervisors they stand for would never have done."""
        own = self._own.get(index)
        if own is not None:
            if own.record(now):
                return True
            self._own[index] = Intensity(self.rules.intensity, self.rules.period)
        return self.intensity.record(now)

    def _group(self, index: int) -> list[int]:
        """The children a crash of `index` restarts, in start order."""
        strategy = self.rules.strategy
        if strategy == "one_for_all":
            return list(range(len(self.children)))
        if strategy == "rest_for_one" and not self.children[index].rule.independent:
            return list(range(index, len(self.children)))
        return [index]

    def _add_start(self, indexes: list[int]) -> None:
        self.to_start = sorted(set(self.to_start) | set(indexes))

    def _restart_request(self, event: RestartRequest, out: list[Action]) -> None:
        index = self._index.get(event.name)
        if index is None:
            out.append(Refuse(event.name, f"no actor named {event.name!r}"))
            return
        slot = self.children[index]
        if self.phase != "running" or slot.status != "running" or self.busy:
            out.append(
                Refuse(event.name, f"{event.name} is {slot.status}" + (" (busy)" if self.busy else ""))
            )
            return
        slot.restart_after_stop = True
        slot.status = "stopping"
        slot.reason = "restart requested"
        out.append(self._report(slot, "stopping", "restart requested", why="requested"))
        out.append(StopChild(slot.rule.name, slot.generation, slot.rule.shutdown))

    def _stop_all(self, phase: Literal["stopping", "escalating"]) -> None:
        self.phase = phase
        self.to_start = []
        for slot in self.children:
            slot.restart_after_stop = False
        self.to_stop = [
            i for i in reversed(range(len(self.children))) if self.children[i].status != "stopped"
        ]

    def _advance(self, out: list[Action]) -> None:
        self.to_stop = [i for i in self.to_stop if self.children[i].status != "stopped"]
        for i in self.to_stop:
            slot = self.children[i]
            if slot.status in ("stopping", "killing") or self._needed_by_live(i):
                continue  # under way, or a sibling that needs it is still there: its turn comes
            slot.status = "stopping"
            out.append(self._report(slot, "stopping", slot.reason, why="shutdown"))
            out.append(StopChild(slot.rule.name, slot.generation, slot.rule.shutdown))
        if any(c.status in ("stopping", "killing") for c in self.children):
            return  # a stop (a restart's, an admin restart's, a kill) under way: start nothing yet
        self.to_start = [
            i for i in self.to_start if self.children[i].status != "running" and not self.children[i].finished
        ]
        for i in self.to_start:
            slot = self.children[i]
            if slot.status != "stopped" or not self._may_start(i):
                continue
            slot.generation += 1
            slot.status = "starting"
            out.append(self._report(slot, "starting", slot.reason, why="start"))
            out.append(Spawn(slot.rule.name, slot.generation))
        if self.to_start:
            return
        if self.phase == "starting":
            self.phase = "running"
            out.append(Ready())
        elif self.phase == "stopping":
            self.phase = "done"
            out.append(Stopped())
        elif self.phase == "escalating":
            self.phase = "done"
            out.append(Escalate(self.escalation))

    def _needed_by_live(self, index: int) -> bool:
        """A sibling being stopped that needs child `index` has not stopped yet."""
        return any(index in self._needs[j] for j in self.to_stop)

    def _may_start(self, index: int) -> bool:
        """Every elder it needs runs (or is not to run), and no starting sibling needs it."""
        for j, other in enumerate(self.children):
            if j == index:
                continue
            if j in self._needs[index] and (other.status == "starting" or j in self.to_start):
                return False
            if index in self._needs[j] and other.status == "starting":
                return False
        return True

    def _report(self, slot: ChildSlot, state: str, reason: str = "", why: str = "") -> Report:
        return Report(slot.rule.name, state, slot.restarts, slot.requested, reason, why)
