"""Every message that crosses between actors: small picklable dataclasses, in one place (STYLE).

Thespian pickles these over its loopback TCP ports, so they hold plain data only: no sockets, no
locks, no callables. Actor addresses travel inside them where a reply must go somewhere else than
the sender.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["rest_for_one", "one_for_one", "one_for_all"]


# --- supervision -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildSpec:
    """One child of a supervisor: `actor` is a dotted path `module:Class` (picklable, importable).

    `shutdown`: seconds it gets to exit when asked before it is killed (a supervisor gets longer:
    it stops its own children first). `independent`: no later sibling needs it, so under
    rest_for_one its crash restarts only itself (chrnode/supervision.py, docs/architecture.md).
    `needs`: the elder siblings it needs running from its start to its stop; None is all of them
    (OTP's strict order), fewer let it start and stop alongside the others.
    `intensity`/`period` (supervisors only): restarts allowed within period seconds; None takes
    the config's max_restarts / restart_window.
    """

    name: str
    actor: str
    restart: RestartType = "permanent"
    children: tuple[ChildSpec, ...] = ()
    strategy: Strategy = "one_for_one"
    shutdown: float = 5.0
    independent: bool = False
    needs: tuple[str, ...] | None = None
    intensity: int | None = None
    period: float | None = None

    @property
    def is_supervisor(self) -> bool:
        return bool(self.children)


@dataclass(frozen=True)
class Init:
    """First message to every actor, from its supervisor: who it is and how the node is set up."""

    name: str
    config: Any  # chrnode.config.Config (frozen dataclass, picklable)
    registry: dict[str, Any]
    parent: str
    spec: ChildSpec | None = None
    daemon_pid: int = 0
    restarts: dict[str, tuple[int, int]] = field(default_factory=dict)  # a supervisor's children's
    # (restarts, requested) so far, so counts survive the supervisor's own restart


@dataclass(frozen=True)
class Preload:
    """To a process created ahead of its turn (before its Init): a supervisor imports its
    children's modules and creates their processes too; a leaf runs `on_preload`."""

    spec: ChildSpec


@dataclass(frozen=True)
class Started:
    """An actor finished `Init` and is ready; sent to its supervisor."""

    name: str
    pid: int


@dataclass(frozen=True)
class InitFailed:
    """An actor could not start (bad port, unreadable file...). The supervisor treats it as a crash."""

    name: str
    reason: str


@dataclass(frozen=True)
class Stopping:
    """A child announces it is about to exit on purpose (a normal exit, for transient children)."""

    name: str


@dataclass(frozen=True)
class Exiting:
    """A child asked to exit has released what it holds (`on_stop` done) and is exiting: its
    supervisor may go on with the next stop without waiting for the process to be reaped."""

    name: str


@dataclass(frozen=True)
class RegistryUpdate:
    """The root pushes the whole name -> address map whenever it changes."""

    entries: dict[str, Any]


@dataclass(frozen=True)
class Registered:
    """A sub-supervisor tells its parent (and so the root) where a child now lives."""

    name: str
    address: Any
    pid: int
    parent: str


@dataclass(frozen=True)
class Upward:
    """What a sub-supervisor tells its parent while handling one message (`Registered`,
    `ChildState`, `Started`), in order, as one message (actors/registry.py)."""

    messages: tuple[Any, ...]


@dataclass(frozen=True)
class ChildState:
    """A supervisor reports a child's state change upward, for the tree the RPC shows."""

    name: str
    parent: str
    state: str  # starting | running | hung | stopping | restarting | stopped
    restarts: int
    restart_type: RestartType
    pid: int = 0
    reason: str = ""
    requested: int = 0  # admin restarts (not counted in `restarts`, not crashes)


@dataclass(frozen=True)
class StartTree:
    """From the daemon to the root supervisor: build the tree under `spec`."""

    spec: ChildSpec
    config: Any
    daemon_pid: int


@dataclass(frozen=True)
class TreeReady:
    names: tuple[str, ...]


@dataclass(frozen=True)
class TreeFailed:
    """The root gave up (an actor could not start, or restart intensity was exceeded)."""

    reason: str


@dataclass(frozen=True)
class StopTree:
    """Stop every actor in reverse start order, then answer TreeStopped."""


@dataclass(frozen=True)
class TreeStopped:
    pass


@dataclass(frozen=True)
class RestartActor:
    """Admin: restart the named actor as if it had crashed (counted, with the strategy applied)."""

    name: str
    reply_to: Any = None
    tag: Any = None


@dataclass(frozen=True)
class StopNode:
    """Admin: ask the daemon to stop the node."""

    reason: str = "admin_stop"


@dataclass(frozen=True)
class AdminReply:
    tag: Any
    ok: bool
    message: str
    result: Any = None


@dataclass(frozen=True)
class GetTree:
    """Ask the root for the tree table (name, parent, state, restarts, restart_type, pid, reason)."""


@dataclass(frozen=True)
class TreeSnapshot:
    actors: tuple[dict[str, Any], ...]
    registry: dict[str, Any]


@dataclass(frozen=True)
class WhereIs:
    name: str


@dataclass(frozen=True)
class WhereIsReply:
    name: str
    address: Any


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Pong:
    name: str
    pid: int
    started_at: float


@dataclass(frozen=True)
class SetLogLevel:
    level: str


# --- publish / subscribe -----------------------------------------------------------------------


@dataclass(frozen=True)
class Subscribe:
    topic: str
    subscriber: str  # a registry name, so the subscription survives the subscriber's restart


@dataclass(frozen=True)
class Unsubscribe:
    topic: str
    subscriber: str


@dataclass(frozen=True)
class Publish:
    """`key` names the part of the topic; PubSub retains the last payload per (topic, key) so a
    subscriber that (re)starts gets the current state at once."""

    topic: str
    key: str
    payload: Any


@dataclass(frozen=True)
class Published:
    topic: str
    key: str
    payload: Any


# --- stats, storage, cron ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelsReport:
    """The network loop's channels (chrnode.edge.channel_hub.ChannelHub.status) for Channels."""

    source: str
    status: Any


@dataclass(frozen=True)
class StatsReport:
    """A batch of counters/gauges/timers from one actor (chrnode.stats.StatsBatch inside)."""

    source: str
    batch: Any


@dataclass(frozen=True)
class SqlWrite:
    """Apply `ops` (chrnode.storage write ops) in one transaction; the answer is SqlWritten."""

    ops: tuple[Any, ...]
    tag: Any = None


@dataclass(frozen=True)
class SqlWritten:
    tag: Any
    ok: bool
    results: tuple[Any, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class SqlRead:
    """Run one named query of chrnode.storage's Reader: `query` is the method name."""

    query: str
    args: tuple[Any, ...] = ()
    tag: Any = None


@dataclass(frozen=True)
class SqlReadReply:
    tag: Any
    ok: bool
    result: Any = None
    error: str = ""


@dataclass(frozen=True)
class CronRegister:
    """Ask Cron to send RunJob(name) to `target` every `interval` seconds."""

    name: str
    target: str
    interval: float
    first_delay: float = 0.0


@dataclass(frozen=True)
class RunJob:
    name: str


@dataclass(frozen=True)
class JobDone:
    name: str
    ok: bool
    error: str = ""
    duration: float = 0.0


@dataclass(frozen=True)
class PortsBound:
    """A listener tells Globals which ports it actually bound (0 in config = picked by the OS)."""

    kind: str  # rpc | rpcs | edge2 | peer2
    ports: tuple[int, ...]


@dataclass
class Envelope:
    """Used by ThreadBridge: a message a thread wants sent to a named actor (its own actor's name:
    handled by that actor, on its thread)."""

    target: str
    message: Any


# --- tickets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaveTicket:
    """Persist a validated ticket if it is the best for (device, fleet, epoch); answered
    TicketSaved after the commit (SPEC 5, 10)."""

    device: bytes
    fleet: bytes
    epoch: int
    total_bytes: int
    total_connections: int
    ticket: bytes  # msgpack of Ticket.to_wire()
    tag: Any = None


@dataclass(frozen=True)
class TicketSaved:
    tag: Any
    ok: bool
    stored: bool = False
    error: str = ""


@dataclass(frozen=True)
class LoadTicket:
    device: bytes
    fleet: bytes
    epoch: int
    tag: Any = None


@dataclass(frozen=True)
class TicketLoaded:
    tag: Any
    ok: bool
    ticket: bytes | None = None  # msgpack of Ticket.to_wire(), None when none is stored
    error: str = ""
