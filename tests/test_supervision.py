"""Supervision on a real multiprocTCPBase actor system: restart types, strategies, intensity (SPEC 9)."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from actors import messages as m
from chrnode.supervision import Intensity, should_restart
from chrnode.testing.actors import Quit, WhoAreYou
from chrnode.testing.tree import running_tree, tree_config

WORKER = "chrnode.testing.actors:Worker"
BROKEN = "chrnode.testing.actors:BrokenStart"

pytestmark = pytest.mark.slow


def spec(*children: m.ChildSpec, strategy: m.Strategy = "rest_for_one") -> m.ChildSpec:
    return m.ChildSpec("Root", "actors.supervisor:Supervisor", strategy=strategy, children=children)


def pid_of(tree_or_snap, name: str) -> int:  # type: ignore[no-untyped-def]
    """The pid from a snapshot (inside wait_for predicates: judge one snapshot, not two) or a tree."""
    snap = tree_or_snap if isinstance(tree_or_snap, m.TreeSnapshot) else tree_or_snap.snapshot()
    return int({r["name"]: r for r in snap.actors}[name]["pid"])


def restarts_of(snap: m.TreeSnapshot, name: str) -> int:
    return int({r["name"]: r for r in snap.actors}[name]["restarts"])


def running(names: list[str]):  # type: ignore[no-untyped-def]
    def check(snap: m.TreeSnapshot) -> bool:
        rows = {r["name"]: r for r in snap.actors}
        return all(rows.get(n, {}).get("state") == "running" and n in snap.registry for n in names)

    return check


def kill(pid: int) -> None:
    assert pid > 0, "no pid to kill (os.kill(0) would kill our own process group)"
    os.kill(pid, signal.SIGKILL)


def state_of(snap: m.TreeSnapshot, name: str) -> str:
    return {r["name"]: r["state"] for r in snap.actors}.get(name, "absent")


def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


# -- pure rules ---------------------------------------------------------------------------------


def test_restart_rules() -> None:
    assert should_restart("permanent", abnormal=False)
    assert should_restart("permanent", abnormal=True)
    assert should_restart("transient", abnormal=True)
    assert not should_restart("transient", abnormal=False)
    assert not should_restart("temporary", abnormal=True)


def test_intensity_window() -> None:
    limit = Intensity(2, 10.0)
    assert limit.record(0.0) and limit.record(1.0)
    assert not limit.record(2.0)  # a third restart inside 10 s
    fresh = Intensity(2, 10.0)
    assert fresh.record(0.0) and fresh.record(1.0) and fresh.record(11.5)  # the first fell out of the window


# -- on a real actor system -----------------------------------------------------------------------


def test_sigkill_of_permanent_child_restarts_it_and_registry_follows() -> None:
    with running_tree(spec(m.ChildSpec("A", WORKER), m.ChildSpec("B", WORKER))) as tree:
        tree.wait_for(running(["A", "B"]))
        old = pid_of(tree, "A")
        kill(old)
        tree.wait_for(lambda s: running(["A", "B"])(s) and pid_of(s, "A") != old)
        name, pid, registry = tree.ask("A", WhoAreYou())
        assert (name, pid) == ("A", pid_of(tree, "A"))
        assert {"A", "B", "Root"} <= set(registry)
        assert tree.actor("A")["restarts"] == 1
        assert gone(old)


def test_rest_for_one_restarts_later_siblings_only() -> None:
    children = (m.ChildSpec("A", WORKER), m.ChildSpec("B", WORKER), m.ChildSpec("C", WORKER))
    with running_tree(spec(*children)) as tree:
        tree.wait_for(running(["A", "B", "C"]))
        before = {n: pid_of(tree, n) for n in "ABC"}
        kill(before["B"])
        tree.wait_for(lambda s: running(["A", "B", "C"])(s) and all(pid_of(s, n) != before[n] for n in "BC"))
        assert pid_of(tree, "A") == before["A"], "rest_for_one must not touch earlier siblings"
        assert tree.actor("B")["restarts"] == 1 and tree.actor("C")["restarts"] == 1


def test_siblings_that_need_nothing_restart_together_and_every_actor_learns_the_new_addresses() -> None:
    # B and C need nothing, so after A's crash they stop and start alongside the others; the
    # new names are pushed once the starts are done (actors/registry.py), and must reach A too.
    children = (
        m.ChildSpec("A", WORKER, needs=()),
        m.ChildSpec("B", WORKER, needs=()),
        m.ChildSpec("C", WORKER, needs=()),
        m.ChildSpec("D", WORKER, needs=("A",)),
    )
    with running_tree(spec(*children)) as tree:
        tree.wait_for(running(list("ABCD")))
        before = {n: pid_of(tree, n) for n in "ABCD"}
        kill(before["A"])
        tree.wait_for(lambda s: running(list("ABCD"))(s) and all(pid_of(s, n) != before[n] for n in "ABCD"))
        for name in "ABCD":
            _, pid, registry = tree.ask(name, WhoAreYou())
            assert pid == pid_of(tree, name)
            assert set("ABCD") <= set(registry), f"{name} does not know {set('ABCD') - set(registry)}"


def test_one_for_one_restarts_only_the_child() -> None:
    children = (m.ChildSpec("A", WORKER), m.ChildSpec("B", WORKER))
    with running_tree(spec(*children, strategy="one_for_one")) as tree:
        tree.wait_for(running(["A", "B"]))
        before = {n: pid_of(tree, n) for n in "AB"}
        kill(before["A"])
        tree.wait_for(lambda s: running(["A"])(s) and pid_of(s, "A") != before["A"])
        assert pid_of(tree, "B") == before["B"]


def test_transient_restarts_after_crash_but_not_after_normal_exit() -> None:
    with running_tree(spec(m.ChildSpec("T", WORKER, restart="transient"), strategy="one_for_one")) as tree:
        tree.wait_for(running(["T"]))
        first = pid_of(tree, "T")
        kill(first)
        tree.wait_for(lambda s: running(["T"])(s) and pid_of(s, "T") != first)
        address = tree.snapshot().registry["T"]
        tree.asys.tell(address, Quit())
        snap = tree.wait_for(lambda s: state_of(s, "T") == "stopped")
        assert "T" not in snap.registry
        time.sleep(0.5)  # give a wrong restart the time to happen
        assert tree.actor("T")["state"] == "stopped"
        assert tree.actor("T")["restarts"] == 1


def test_temporary_is_never_restarted() -> None:
    with running_tree(spec(m.ChildSpec("X", WORKER, restart="temporary"), strategy="one_for_one")) as tree:
        tree.wait_for(running(["X"]))
        kill(pid_of(tree, "X"))
        snap = tree.wait_for(lambda s: state_of(s, "X") == "stopped")
        time.sleep(0.5)
        assert tree.actor("X")["state"] == "stopped" and "X" not in snap.registry


def test_nested_supervisor_restarts_its_children_and_escalation() -> None:
    inner = m.ChildSpec(
        "Inner",
        "actors.supervisor:Supervisor",
        strategy="one_for_one",
        children=(m.ChildSpec("Leaf", WORKER),),
    )
    with running_tree(spec(inner, m.ChildSpec("After", WORKER))) as tree:
        tree.wait_for(running(["Inner", "Leaf", "After"]))
        leaf, inner_pid, after = pid_of(tree, "Leaf"), pid_of(tree, "Inner"), pid_of(tree, "After")
        kill(leaf)  # handled inside Inner: nobody else moves
        tree.wait_for(lambda s: running(["Leaf"])(s) and pid_of(s, "Leaf") != leaf)
        assert pid_of(tree, "Inner") == inner_pid and pid_of(tree, "After") == after
        leaf = pid_of(tree, "Leaf")
        kill(inner_pid)  # the supervisor itself: its child dies with it, After is rest_for_one'd
        tree.wait_for(
            lambda s: (
                running(["Inner", "Leaf", "After"])(s)
                and all(
                    pid_of(s, n) != p for n, p in (("Inner", inner_pid), ("Leaf", leaf), ("After", after))
                )
            )
        )


def test_a_sub_supervisor_is_running_only_with_its_children_registered() -> None:
    """A sub-supervisor sends its reports upward in one message per message it handles
    (actors/registry.py, Upward), its Started after its children's: whoever sees it running
    (and a sibling that needs it, started then) sees its children registered and running."""
    inner = m.ChildSpec(
        "Inner",
        "actors.supervisor:Supervisor",
        strategy="one_for_one",
        children=(m.ChildSpec("Leaf1", WORKER), m.ChildSpec("Leaf2", WORKER, needs=("Leaf1",))),
    )
    with running_tree(spec(inner, m.ChildSpec("After", WORKER, needs=("Inner",)))) as tree:
        assert running(["Inner", "Leaf1", "Leaf2", "After"])(tree.snapshot())  # at TreeReady, no wait
        inner_pid = pid_of(tree, "Inner")
        kill(inner_pid)
        deadline = time.monotonic() + 20
        seen_running = 0
        while time.monotonic() < deadline and seen_running < 5:
            snap = tree.snapshot()
            if state_of(snap, "Inner") == "running" and pid_of(snap, "Inner") != inner_pid:
                assert running(["Leaf1", "Leaf2"])(snap), snap.actors
                seen_running += 1
            time.sleep(0.01)
        assert seen_running == 5, "Inner did not come back"


def test_intensity_exceeded_escalates_to_tree_failure() -> None:
    config = tree_config(max_restarts=2, restart_window=30.0)
    with running_tree(spec(m.ChildSpec("A", WORKER), strategy="one_for_one"), config) as tree:
        for restarts in (1, 2):
            before = pid_of(tree, "A")
            kill(before)
            tree.wait_for(
                lambda s, b=before, r=restarts: (
                    running(["A"])(s) and restarts_of(s, "A") == r and pid_of(s, "A") != b
                )
            )
        kill(pid_of(tree, "A"))  # the third restart inside the window is one too many
        failure = tree.asys.listen(20)
        assert isinstance(failure, m.TreeFailed), failure
        assert "A needed more than 2 restarts" in failure.reason
        started = time.monotonic()  # a root that gave up has nothing to stop: it answers at once
        assert isinstance(tree.asys.ask(tree.root, m.StopTree(), 10), m.TreeStopped)
        assert time.monotonic() - started < 2.0


def test_child_that_cannot_start_fails_the_tree_with_its_reason() -> None:
    config = tree_config(max_restarts=1, restart_window=30.0)
    with pytest.raises(AssertionError, match="Address already in use"):
        with running_tree(spec(m.ChildSpec("Bad", BROKEN)), config):
            pass


def test_admin_restart_and_stop_tree_leave_no_process() -> None:
    children = (m.ChildSpec("A", WORKER), m.ChildSpec("B", WORKER))
    with running_tree(spec(*children)) as tree:
        tree.wait_for(running(["A", "B"]))
        before = pid_of(tree, "A")
        reply = tree.asys.ask(tree.root, m.RestartActor("A", None, tag=7), 20)
        assert isinstance(reply, m.AdminReply) and reply.ok and reply.tag == 7
        assert pid_of(tree, "A") != before
        unknown = tree.asys.ask(tree.root, m.RestartActor("Nope", None, tag=8), 20)
        assert isinstance(unknown, m.AdminReply) and not unknown.ok and "Nope" in unknown.message
        pids = [pid_of(tree, n) for n in "AB"]
        assert isinstance(tree.asys.ask(tree.root, m.StopTree(), 30), m.TreeStopped)
        assert all(gone(pid) for pid in pids)


def test_no_process_outlives_shutdown() -> None:
    inner = m.ChildSpec(
        "Inner",
        "actors.supervisor:Supervisor",
        strategy="one_for_one",
        children=(m.ChildSpec("Leaf", WORKER),),
    )
    with running_tree(spec(inner, m.ChildSpec("A", WORKER))) as tree:
        snap = tree.wait_for(running(["Inner", "Leaf", "A"]))
        pids = [int(r["pid"]) for r in snap.actors]
        admin = psutil.Process(pids[0]).parent().parent()  # Leaf/A -> their supervisor -> ... -> admin
        while admin.ppid() > 1 and admin.parent() is not None and admin.parent().pid != os.getpid():
            admin = admin.parent()
        everything = [admin.pid, *(p.pid for p in admin.children(recursive=True))]
    assert len(everything) >= 5, everything  # admin, logger, root, Inner, Leaf, A
    assert all(gone(pid) for pid in everything), "shutdown() must take the admin, the logger and every actor"
