"""The supervisor's pure state machine against OTP's rules (SPEC 9), in microseconds.

A small simulated world carries out the machine's actions (processes that start, answer, hang,
crash, obey or ignore a stop) and hypothesis drives it with generated event sequences; after each
step the invariants are checked, and after the world settles, the end state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chrnode import supervision as s

# -- a simulated world of child processes ----------------------------------------------------------


@dataclass
class Proc:
    generation: int
    alive: bool = True
    started: bool = False
    stop_asked: bool = False
    killed: bool = False
    hung: bool = False
    admin: bool = False  # an admin restart asked it to stop: it comes back, even if temporary
    doomed: bool = False  # failed its start, its start timeout or a heartbeat: its exit is a crash


@dataclass
class World:
    rules: s.Rules
    machine: s.Supervision = field(init=False)
    procs: dict[str, Proc] = field(default_factory=dict)
    now: float = 0.0
    escalations: int = 0
    stopped: int = 0
    crashes: int = 0
    spawned_after_escalation: bool = False
    spawns: list[str] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    restarted_temporary: list[str] = field(default_factory=list)
    log: list[object] = field(default_factory=list)
    gone_temporary: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.machine = s.Supervision(self.rules)
        self.names = [c.name for c in self.rules.children]
        self.rule = {c.name: c for c in self.rules.children}
        # name -> the siblings it needs (every elder one unless its rule names fewer)
        self.needs = {
            c.name: {self.names[j] for j in self.rules.needs(i)} for i, c in enumerate(self.rules.children)
        }

    def alive(self, name: str) -> Proc | None:
        proc = self.procs.get(name)
        return proc if proc is not None and proc.alive else None

    def feed(self, event: s.Event) -> list[s.Action]:
        self.log.append(event)
        if isinstance(event, (s.InitFailed, s.HeartbeatMissed)) or (
            isinstance(event, s.Timeout) and event.kind == "start"
        ):
            proc = self.procs.get(event.name)
            if proc is not None and proc.generation == event.generation:
                proc.doomed = True
        actions = self.machine.handle(event, self.now)
        admin = isinstance(event, s.RestartRequest)
        for action in actions:
            self.log.append(action)
            self.apply(action, admin)
        return actions

    def apply(self, action: s.Action, admin: bool) -> None:
        if isinstance(action, s.Spawn):
            i = self.names.index(action.name)
            assert self.alive(action.name) is None, f"two processes of {action.name}"
            assert self.escalations == 0, "a spawn after escalating"
            for other, proc in self.procs.items():
                if proc.alive:
                    related = other in self.needs[action.name] or action.name in self.needs[other]
                    assert proc.started or other == action.name or not related, (
                        f"{action.name} spawned while {other} starts"
                    )
                    assert not (proc.stop_asked or proc.killed), f"{action.name} spawned while {other} stops"
            for j in range(i):
                # every earlier child it needs that is to run is up already: starts go in order
                slot = self.machine.children[j]
                if self.names[j] in self.needs[action.name]:
                    assert j not in self.machine.to_start or slot.finished, (
                        f"{action.name} spawned before {self.names[j]}"
                    )
                    proc = self.alive(self.names[j])
                    assert proc is None or proc.started, f"{action.name} spawned before {self.names[j]}"
            if action.name in self.gone_temporary:
                self.restarted_temporary.append(action.name)
            previous = self.procs.get(action.name)
            assert previous is None or action.generation > previous.generation
            self.procs[action.name] = Proc(action.generation)
            self.spawns.append(action.name)
        elif isinstance(action, s.StopChild):
            proc = self.alive(action.name)
            assert proc is not None and proc.generation == action.generation, f"stop of a dead {action.name}"
            assert action.timeout == self.rule[action.name].shutdown
            i = self.names.index(action.name)
            if not admin:
                later = [
                    n
                    for n in self.names[i + 1 :]
                    if self.alive(n) is not None and action.name in self.needs[n]
                ]
                assert not later, f"{action.name} stopped while {later}, which need it, still live"
            proc.stop_asked = True
            proc.admin = admin
            self.stops.append(action.name)
        elif isinstance(action, s.Kill):
            proc = self.alive(action.name)
            assert proc is not None and proc.generation == action.generation
            proc.killed = True
        elif isinstance(action, s.Escalate):
            assert all(p is None for p in map(self.alive, self.names)), "escalated with children alive"
            self.escalations += 1
        elif isinstance(action, s.Stopped):
            assert all(p is None for p in map(self.alive, self.names)), "stopped with children alive"
            self.stopped += 1

    # -- what can happen next ------------------------------------------------------------------

    def exit(self, name: str, abnormal: bool) -> None:
        proc = self.procs[name]
        proc.alive = False
        restarts = abnormal or proc.doomed or self.rule[name].restart == "permanent"
        if restarts and (proc.doomed or not (proc.stop_asked or proc.killed)):
            self.crashes += 1
        if self.rule[name].restart == "temporary" and not proc.admin:
            self.gone_temporary.add(name)
        self.feed(s.Exited(name, proc.generation, abnormal=abnormal))

    def settle(self) -> None:
        """Let every pending thing finish: starts answer, stops are obeyed or time out, kills land."""
        for _ in range(1000):
            for name in self.names:
                proc = self.alive(name)
                if proc is None:
                    continue
                if proc.killed:
                    self.exit(name, abnormal=True)
                elif proc.stop_asked and proc.hung:
                    self.feed(s.Timeout(name, proc.generation, "stop"))
                elif proc.stop_asked:
                    self.exit(name, abnormal=False)
                elif proc.hung and proc.started:
                    self.feed(s.HeartbeatMissed(name, proc.generation))
                elif proc.hung:
                    self.feed(s.Timeout(name, proc.generation, "start"))
                elif not proc.started:
                    proc.started = True
                    self.feed(s.Started(name, proc.generation))
                else:
                    continue
                break
            else:
                return
        raise AssertionError("the world did not settle")


RESTARTS = st.sampled_from(["permanent", "transient", "temporary"])


def elders(names: Iterable[str]) -> st.SearchStrategy[tuple[str, ...]]:
    """Some of `names`, in order, without repeats (maybe none)."""
    pool = list(names)
    if not pool:
        return st.just(())
    return st.lists(st.sampled_from(pool), unique=True).map(lambda picked: tuple(sorted(picked)))


@st.composite
def rules(draw: st.DrawFn) -> s.Rules:
    count = draw(st.integers(1, 5))
    independent = [draw(st.booleans()) for _ in range(count)]
    children = tuple(
        s.ChildRule(
            f"c{i}",
            draw(RESTARTS),
            shutdown=draw(st.sampled_from([0.5, 1.0, 5.0])),
            independent=independent[i],
            # None: every elder (OTP's order); or some of the elders no one calls independent
            needs=draw(st.none() | elders(f"c{j}" for j in range(i) if not independent[j])),
        )
        for i in range(count)
    )
    return s.Rules(
        children,
        strategy=draw(st.sampled_from(["one_for_one", "rest_for_one", "one_for_all"])),
        intensity=draw(st.integers(0, 6)),
        period=draw(st.sampled_from([1.0, 5.0, 60.0])),
    )


MOVES = ("start", "fail", "crash", "quit", "obey", "hang", "timeout", "stale", "admin", "wait", "stop")


def step(world: World, data: st.DataObject) -> None:
    move = data.draw(st.sampled_from(MOVES))
    name = data.draw(st.sampled_from(world.names))
    proc = world.alive(name)
    if move == "wait":
        world.now += data.draw(st.sampled_from([0.01, 0.5, 2.0, 10.0]))
    elif move == "stop":
        world.feed(s.Stop())
    elif move == "admin":
        world.feed(s.RestartRequest(name))
    elif move == "stale":
        old = world.procs.get(name)
        if old is not None and old.generation > 1:
            for event in (
                s.Exited(name, old.generation - 1),
                s.Started(name, old.generation - 1),
                s.Timeout(name, old.generation - 1, "stop"),
                s.HeartbeatMissed(name, old.generation - 1),
            ):
                assert world.feed(event) == [], f"a stale {event} was acted upon"
    elif proc is None:
        return
    elif move == "start" and not proc.started and not proc.hung and not proc.stop_asked:
        proc.started = True
        world.feed(s.Started(name, proc.generation))
    elif move == "fail" and not proc.started:
        world.feed(s.InitFailed(name, proc.generation, "bad port"))
    elif move == "crash":
        world.exit(name, abnormal=True)
    elif move == "quit" and proc.started and not proc.hung:
        world.exit(name, abnormal=False)
    elif move == "obey" and (proc.stop_asked or proc.killed) and not proc.hung:
        world.exit(name, abnormal=proc.killed)
    elif move == "hang":
        proc.hung = True
        if proc.started:
            world.feed(s.HeartbeatMissed(name, proc.generation))
    elif move == "timeout":
        if proc.stop_asked:
            world.feed(s.Timeout(name, proc.generation, "stop"))
        elif not proc.started:
            world.feed(s.Timeout(name, proc.generation, "start"))


def started_world(spec: s.Rules) -> World:
    world = World(spec)
    world.feed(s.Start())
    world.settle()
    assert world.machine.phase == "running"
    return world


# -- generated sequences ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=rules(), data=st.data())
def test_generated_sequences_keep_otp_invariants(spec: s.Rules, data: st.DataObject) -> None:
    world = World(spec)
    world.feed(s.Start())
    for _ in range(data.draw(st.integers(0, 40))):
        step(world, data)
    world.settle()
    assert world.escalations <= 1, "escalated more than once"
    assert not world.restarted_temporary, f"temporary children restarted: {world.restarted_temporary}"
    if world.crashes <= spec.intensity:
        assert world.escalations == 0, "escalated within the intensity"
    if world.escalations or world.stopped:
        assert all(world.alive(n) is None for n in world.names)
        return
    machine = world.machine
    for name in world.names:
        proc, slot = world.alive(name), machine.slot(name)
        if world.rule[name].restart == "permanent":
            assert proc is not None and proc.started, f"permanent {name} is not running: {slot}"
        if proc is not None:
            assert proc.started and slot.status == "running"
        else:
            assert slot.status == "stopped" and slot.finished
    assert not machine.busy


@settings(max_examples=200, deadline=None)
@given(spec=rules(), data=st.data())
def test_a_storm_within_intensity_ends_with_every_permanent_child_running(
    spec: s.Rules, data: st.DataObject
) -> None:
    world = started_world(s.Rules(spec.children, spec.strategy, intensity=1000, period=spec.period))
    for _ in range(data.draw(st.integers(1, 30))):
        name = data.draw(st.sampled_from(world.names))
        if world.alive(name) is not None:
            world.exit(name, abnormal=True)
        if data.draw(st.booleans()):
            world.settle()
    world.settle()
    assert world.escalations == 0
    for name in world.names:
        if world.rule[name].restart == "permanent":
            proc = world.alive(name)
            assert proc is not None and proc.started


@settings(max_examples=200, deadline=None)
@given(
    intensity=st.integers(0, 5),
    period=st.sampled_from([1.0, 5.0]),
    gaps=st.lists(st.sampled_from([0.0, 0.3, 1.1, 6.0]), min_size=1, max_size=12),
)
def test_intensity_and_period_escalate_exactly_once(intensity: int, period: float, gaps: list[float]) -> None:
    world = started_world(s.Rules((s.ChildRule("a"), s.ChildRule("b")), "one_for_one", intensity, period))
    times: list[float] = []
    expect_escalation = False
    for gap in gaps:
        world.now += gap
        if world.alive("a") is None:
            break
        times.append(world.now)
        world.exit("a", abnormal=True)
        world.settle()
        recent = [t for t in times if world.now - t <= period]
        if len(recent) > intensity:
            expect_escalation = True
            break
    assert world.escalations == (1 if expect_escalation else 0)
    if expect_escalation:
        assert world.alive("b") is None, "escalation leaves no child behind"
        assert "a needed more than" in world.machine.escalation


# -- OTP's rules, one by one ------------------------------------------------------------------------


def five(strategy: s.Strategy, **restart: s.RestartType) -> s.Rules:
    return s.Rules(tuple(s.ChildRule(n, restart.get(n, "permanent")) for n in "abcde"), strategy)


def test_initial_start_is_in_order_one_at_a_time() -> None:
    world = World(five("rest_for_one"))
    actions = world.feed(s.Start())
    assert [a for a in actions if isinstance(a, s.Spawn)] == [s.Spawn("a", 1)]
    world.settle()
    assert world.spawns == list("abcde")
    assert isinstance(world.log[-1], s.Ready)


def test_rest_for_one_stops_later_children_last_first_and_starts_them_in_order() -> None:
    world = started_world(five("rest_for_one"))
    world.spawns.clear()
    world.exit("b", abnormal=True)
    world.settle()
    assert world.stops == ["e", "d", "c"]
    assert world.spawns == ["b", "c", "d", "e"]
    assert [world.machine.slot(n).restarts for n in "abcde"] == [0, 1, 1, 1, 1]


def test_one_for_one_and_one_for_all() -> None:
    world = started_world(five("one_for_one"))
    world.spawns.clear()
    world.exit("c", abnormal=True)
    world.settle()
    assert world.spawns == ["c"] and world.stops == []
    world = started_world(five("one_for_all"))
    world.spawns.clear()
    world.exit("c", abnormal=True)
    world.settle()
    assert world.stops == ["e", "d", "b", "a"]
    assert world.spawns == list("abcde")


def test_a_temporary_sibling_is_not_restarted_by_rest_for_one() -> None:
    world = started_world(five("rest_for_one", d="temporary"))
    world.spawns.clear()
    world.exit("b", abnormal=True)
    world.settle()
    assert world.stops == ["e", "d", "c"]
    assert world.spawns == ["b", "c", "e"]
    assert world.machine.slot("d").status == "stopped"


def test_transient_and_temporary_exits() -> None:
    world = started_world(five("rest_for_one", c="transient", d="temporary"))
    world.spawns.clear()
    world.exit("c", abnormal=False)  # a transient child that is done: nothing moves
    world.exit("d", abnormal=True)  # a temporary child: never restarted, siblings untouched
    world.settle()
    assert world.spawns == [] and world.stops == []
    world.exit("a", abnormal=True)  # OTP starts the finished transient child again here
    world.settle()
    assert world.spawns == ["a", "b", "c", "e"]


def test_an_independent_child_restarts_alone_under_rest_for_one() -> None:
    children = tuple(s.ChildRule(n, independent=(n == "b")) for n in "abcd")
    world = started_world(s.Rules(children, "rest_for_one"))
    world.spawns.clear()
    world.exit("b", abnormal=True)
    world.settle()
    assert world.spawns == ["b"] and world.stops == []
    world.exit("a", abnormal=True)  # an earlier child still takes the independent one along
    world.settle()
    assert world.spawns == ["b", "a", "b", "c", "d"]


@given(
    own=st.integers(0, 12),
    others=st.integers(0, 4),
    intensity=st.integers(0, 3),
)
def test_an_independent_child_counts_its_restarts_against_an_intensity_of_its_own(
    own: int, others: int, intensity: int
) -> None:
    # As under a one_for_one supervisor of its own: that supervisor exits (one restart here)
    # each time its own intensity is exceeded, i.e. on every (intensity + 1)-th crash.
    children = (s.ChildRule("a"), s.ChildRule("b", independent=True), s.ChildRule("c"))
    world = started_world(s.Rules(children, "rest_for_one", intensity=intensity, period=5.0))
    crashes = [("b", own), ("c", others)]
    for name, count in crashes:
        for _ in range(count):
            if world.escalations:
                break
            world.now += 0.01  # all within one period
            world.exit(name, abnormal=True)
            world.settle()
    counted = own // (intensity + 1) + others
    assert world.escalations == (1 if counted > intensity else 0), (own, others, world.machine.escalation)


def test_a_hung_child_is_reported_killed_after_its_shutdown_and_does_not_block_the_restart() -> None:
    children = (s.ChildRule("a"), s.ChildRule("b", shutdown=2.0), s.ChildRule("c", shutdown=0.5))
    world = started_world(s.Rules(children, "rest_for_one"))
    world.procs["b"].hung = True
    actions = world.feed(s.HeartbeatMissed("b", world.procs["b"].generation))
    assert s.Report("b", "hung", 0, 0, "did not answer a heartbeat", "crash") in actions
    assert s.Kill("b", 1, "did not answer a heartbeat") in actions
    world.procs["c"].hung = True  # and a sibling hangs too: its stop times out, then it is killed
    world.exit("b", abnormal=True)
    assert world.stops == ["c"]
    actions = world.feed(s.Timeout("c", 1, "stop"))
    assert actions == [s.Kill("c", 1, "did not stop within 0.5 s")]
    world.settle()
    assert [world.procs[n].generation for n in "abc"] == [1, 2, 2]


def test_stop_is_last_first_each_with_its_shutdown_then_a_kill() -> None:
    children = tuple(s.ChildRule(n, shutdown=t) for n, t in zip("abc", (1.0, 2.0, 3.0), strict=True))
    world = started_world(s.Rules(children, "rest_for_one"))
    world.procs["b"].hung = True
    actions = world.feed(s.Stop())
    assert [a for a in actions if isinstance(a, s.StopChild)] == [s.StopChild("c", 1, 3.0)]
    world.exit("c", abnormal=False)
    assert world.stops == ["c", "b"]
    assert world.feed(s.Timeout("b", 1, "stop")) == [s.Kill("b", 1, "did not stop within 2 s")]
    world.exit("b", abnormal=True)
    world.settle()
    assert world.stops == ["c", "b", "a"] and world.stopped == 1 and world.spawns == list("abc")


def test_a_child_dead_before_started_is_a_crash_and_later_siblings_start() -> None:
    world = World(five("rest_for_one"))
    world.feed(s.Start())
    world.settle()
    world.spawns.clear()
    world.exit("c", abnormal=True)
    # its replacement dies too, before it said Started
    world.exit("c", abnormal=True)
    world.settle()
    assert world.spawns == ["c", "d", "e", "c", "d", "e"][: len(world.spawns)]
    assert all(world.alive(n) is not None for n in "abcde")


def test_admin_restart_is_requested_not_a_crash() -> None:
    spec = five("rest_for_one")
    world = started_world(s.Rules(spec.children, spec.strategy, intensity=0))
    world.spawns.clear()
    actions = world.feed(s.RestartRequest("b"))
    assert s.StopChild("b", 1, 5.0) in actions
    world.settle()
    assert world.spawns == ["b"] and world.escalations == 0
    slot = world.machine.slot("b")
    assert (slot.restarts, slot.requested) == (0, 1)
    assert any(
        isinstance(a, s.Report) and a.why == "requested" and a.state == "restarting" for a in world.log
    )
    assert world.feed(s.RestartRequest("zz")) == [s.Refuse("zz", "no actor named 'zz'")]


def test_counts_carry_over_a_supervisor_restart() -> None:
    machine = s.Supervision(five("one_for_one"), restarts={"c": (3, 1)})
    assert (machine.slot("c").restarts, machine.slot("c").requested) == (3, 1)


def test_rules_refuse_duplicate_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        s.Rules((s.ChildRule("a"), s.ChildRule("a")))


def chain_with_needs() -> s.Rules:
    """a <- b <- d, c needs nothing, e needs b and c (the shape of the node's root, small)."""
    needs = {"a": (), "b": ("a",), "c": (), "d": ("b",), "e": ("b", "c")}
    return s.Rules(tuple(s.ChildRule(n, needs=needs[n]) for n in "abcde"), "rest_for_one")


def spawned(actions: list[s.Action]) -> list[str]:
    return [a.name for a in actions if isinstance(a, s.Spawn)]


def stopped(actions: list[s.Action]) -> list[str]:
    return [a.name for a in actions if isinstance(a, s.StopChild)]


def test_children_start_as_soon_as_what_they_need_runs() -> None:
    world = World(chain_with_needs())

    def started(name: str) -> list[str]:
        world.procs[name].started = True
        return spawned(world.feed(s.Started(name, 1)))

    assert spawned(world.feed(s.Start())) == ["a", "c"]
    assert started("c") == []  # e needs b too
    assert started("a") == ["b"]
    assert started("b") == ["d", "e"]
    world.settle()
    assert world.machine.phase == "running" and isinstance(world.log[-1], s.Ready)


def test_a_restart_stops_dependents_first_and_the_rest_together() -> None:
    world = started_world(chain_with_needs())
    world.spawns.clear()
    world.procs["a"].alive = False
    actions = world.feed(s.Exited("a", 1, abnormal=True))
    assert stopped(actions) == ["e", "d"]  # b and c wait for those that need them
    world.exit("d", abnormal=False)
    assert world.stops == ["e", "d"]  # e still needs b
    world.exit("e", abnormal=False)
    assert world.stops == ["e", "d", "c", "b"]
    world.exit("c", abnormal=False)
    assert world.spawns == []  # no start while a stop is under way
    world.exit("b", abnormal=False)
    assert world.spawns == ["a", "c"]
    world.settle()
    assert world.spawns == ["a", "c", "b", "d", "e"]


def test_default_needs_keep_otps_strict_order() -> None:
    rules = five("rest_for_one")
    assert [sorted(rules.needs(i)) for i in range(5)] == [[], [0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]


def test_rules_refuse_needs_that_are_not_dependable_elders() -> None:
    with pytest.raises(ValueError, match="not an elder sibling"):
        s.Rules((s.ChildRule("a", needs=("b",)), s.ChildRule("b")))
    with pytest.raises(ValueError, match="marked independent"):
        s.Rules((s.ChildRule("a", independent=True), s.ChildRule("b", needs=("a",))))
