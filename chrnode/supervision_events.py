"""The vocabulary of supervision (SPEC 9): rules, events and actions of `chrnode.supervision`.

Plain frozen dataclasses, no behaviour beyond `should_restart` and `Intensity`, so that adapters,
tests and docs can name them without the state machine.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "rest_for_one", "one_for_all"]
ChildStatus = Literal["stopped", "starting", "running", "stopping", "killing"]


def should_restart(restart: RestartType, abnormal: bool) -> bool:
    """permanent: always; transient: only after an abnormal exit; temporary: never."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return abnormal
    return False


class Intensity:
    """At most `max_restarts` restarts within `window` seconds; one more means give up (escalate).

    Same rule as OTP's `intensity`/`period`: with max_restarts=5 and window=5, a sixth restart
    inside any 5-second window makes the supervisor stop its children and exit.
    """

    def __init__(self, max_restarts: int, window: float) -> None:
        if max_restarts < 0 or window <= 0:
            raise ValueError("max_restarts must be >= 0 and window > 0")
        self.max_restarts = max_restarts
        self.window = window
        self._times: deque[float] = deque()

    def record(self, now: float) -> bool:
        """Count a restart at `now`; False when the limit is exceeded (the caller escalates)."""
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        return len(self._times) <= self.max_restarts

    @property
    def recent(self) -> int:
        return len(self._times)


# -- the rules a supervisor is built from -----------------------------------------------------------


@dataclass(frozen=True)
class ChildRule:
    name: str
    restart: RestartType = "permanent"
    shutdown: float = 5.0  # seconds between StopChild and Kill
    independent: bool = False  # rest_for_one: no later sibling needs it
    # The elder siblings this child needs running while it starts and until it has stopped;
    # None is every elder sibling (OTP's strict order). docs/architecture.md, "Restart time".
    needs: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Rules:
    children: tuple[ChildRule, ...]
    strategy: Strategy = "one_for_one"
    intensity: int = 5
    period: float = 5.0

    def __post_init__(self) -> None:
        names = [c.name for c in self.children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        for i, child in enumerate(self.children):
            for need in child.needs or ():
                if need not in names[:i]:
                    raise ValueError(f"{child.name} needs {need!r}, which is not an elder sibling")
                if self.children[names.index(need)].independent:
                    raise ValueError(f"{child.name} needs {need!r}, which is marked independent")

    def needs(self, index: int) -> frozenset[int]:
        """The indexes of the elder siblings child `index` needs (all of them by default)."""
        needs = self.children[index].needs
        if needs is None:
            return frozenset(range(index))
        names = [c.name for c in self.children]
        return frozenset(names.index(n) for n in needs)


# -- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Start every child, in order (the supervisor's own init)."""


@dataclass(frozen=True)
class Started:
    name: str
    generation: int


@dataclass(frozen=True)
class InitFailed:
    name: str
    generation: int
    reason: str


@dataclass(frozen=True)
class Exited:
    """The child's process is gone. `abnormal` unless it announced a normal exit first."""

    name: str
    generation: int
    abnormal: bool = True
    reason: str = ""


@dataclass(frozen=True)
class Timeout:
    """A timer armed by `Spawn` (kind "start") or `StopChild` (kind "stop") fired."""

    name: str
    generation: int
    kind: Literal["start", "stop"]


@dataclass(frozen=True)
class HeartbeatMissed:
    """A running child did not answer a heartbeat within the configured time (hung, SIGSTOP)."""

    name: str
    generation: int
    reason: str = "did not answer a heartbeat"


@dataclass(frozen=True)
class RestartRequest:
    name: str


@dataclass(frozen=True)
class Stop:
    """Stop every child, last first (shutdown, or the parent stops this supervisor)."""


Event = Start | Started | InitFailed | Exited | Timeout | HeartbeatMissed | RestartRequest | Stop


# -- actions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    """Create the child's process and send it Init; arm Timeout(kind="start")."""

    name: str
    generation: int


@dataclass(frozen=True)
class StopChild:
    """Ask the child to exit; arm Timeout(kind="stop") after `timeout` seconds."""

    name: str
    generation: int
    timeout: float


@dataclass(frozen=True)
class Kill:
    """Kill the child's process now (SIGKILL); its Exited follows."""

    name: str
    generation: int
    reason: str = ""


@dataclass(frozen=True)
class Report:
    """A child's state changed: for the tree table, the registry and the log.

    `state` is one of starting, running, stopping, stopped, hung, restarting; `why` says what
    caused it: "crash", "requested" (admin), "strategy" (restarted along with a sibling),
    "shutdown", "start", "" (nothing to explain).
    """

    name: str
    state: str
    restarts: int
    requested: int
    reason: str = ""
    why: str = ""


@dataclass(frozen=True)
class Refuse:
    """A RestartRequest that cannot be done now."""

    name: str
    reason: str


@dataclass(frozen=True)
class Ready:
    """Every child is up after Start."""


@dataclass(frozen=True)
class Stopped:
    """Every child is gone after Stop."""


@dataclass(frozen=True)
class Escalate:
    """Intensity exceeded: every child is gone; the supervisor must now fail to its parent."""

    reason: str


Action = Spawn | StopChild | Kill | Report | Refuse | Ready | Stopped | Escalate
