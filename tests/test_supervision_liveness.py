"""Liveness on real processes (SPEC 9): deaths before Started, hung children (SIGSTOP), hung
siblings during a restart and a stop, handlers that raise, counts that survive a restart."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from actors import messages as m
from chrnode.testing.actors import Boom, Recall, Remember
from chrnode.testing.tree import TreeHandle, running_tree, tree_config
from tests.test_supervision import gone, kill, pid_of, restarts_of, running, spec, state_of

WORKER = "chrnode.testing.actors:Worker"
SLOW = "chrnode.testing.actors:SlowStart"

pytestmark = pytest.mark.slow


def row(snap: m.TreeSnapshot, name: str) -> dict[str, object]:
    return {r["name"]: r for r in snap.actors}[name]


@pytest.fixture
def stopped_pids() -> Iterator[list[int]]:
    """Processes a test SIGSTOPs: continued afterwards, so that nothing stays frozen."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def freeze(pids: list[int], pid: int) -> None:
    assert pid > 0
    pids.append(pid)
    os.kill(pid, signal.SIGSTOP)


def test_a_child_killed_before_started_and_its_replacement_too_end_in_a_whole_tree() -> None:
    children = (m.ChildSpec("A", WORKER), m.ChildSpec("S", SLOW), m.ChildSpec("C", WORKER))
    with running_tree(spec(*children)) as tree:
        tree.wait_for(running(["A", "S", "C"]))
        first_c = pid_of(tree, "C")
        kill(pid_of(tree, "S"))
        seen: set[int] = set()
        for _ in range(2):  # the replacement dies while it starts, and so does the next one
            snap = tree.wait_for(
                lambda s: state_of(s, "S") == "starting" and int(row(s, "S")["pid"]) not in (0, *seen),
                timeout=10,
            )
            starting = int(row(snap, "S")["pid"])
            seen.add(starting)
            kill(starting)
            died = time.monotonic()
            tree.wait_for(lambda s, p=starting: int(row(s, "S")["pid"]) != p, timeout=10)
            assert time.monotonic() - died < 1.5, "a child that dies while it starts is seen within a second"
        snap = tree.wait_for(running(["A", "S", "C"]), timeout=20)
        assert pid_of(snap, "C") != first_c, "rest_for_one started the later sibling again"
        assert restarts_of(snap, "S") == 3


def test_a_hung_child_is_reported_then_killed_and_restarted(stopped_pids: list[int]) -> None:
    config = tree_config(heartbeat_timeout=1.0)  # as long as the ping interval: a healthy B must pass
    with running_tree(spec(m.ChildSpec("A", WORKER), m.ChildSpec("B", WORKER)), config) as tree:
        tree.wait_for(running(["A", "B"]))
        time.sleep(2.5)  # a few heartbeats: answered ones do not count as hung
        snap = tree.snapshot()
        assert restarts_of(snap, "A") == restarts_of(snap, "B") == 0, snap.actors
        hung = pid_of(snap, "A")
        freeze(stopped_pids, hung)
        frozen = time.monotonic()
        # "hung" lasts only until the kill is seen (~10 ms): watched for, not waited on
        seen_hung = tree.wait_for(lambda s: state_of(s, "A") == "hung" or pid_of(s, "A") != hung, timeout=5)
        if state_of(seen_hung, "A") == "hung":
            assert "A" not in seen_hung.registry, "a hung actor is taken out of the registry"
        snap = tree.wait_for(lambda s: running(["A", "B"])(s) and pid_of(s, "A") != hung, timeout=10)
        assert time.monotonic() - frozen < 0.5 + 1.0 + 3.5, "ping interval + timeout, then the restart"
        assert gone(hung), "the hung process was killed"
        assert "heartbeat" in str(row(snap, "A")["last_exit"]), "chr_node_info says why it restarted"
        assert restarts_of(snap, "A") == 1
        assert row(snap, "B")["last_exit"] == "A restarted", "B, answering, went down only by rest_for_one"


def test_a_hung_sibling_cannot_block_a_rest_for_one_restart(stopped_pids: list[int]) -> None:
    children = (m.ChildSpec("A", WORKER), m.ChildSpec("B", WORKER), m.ChildSpec("C", WORKER, shutdown=1.0))
    with running_tree(spec(*children)) as tree:  # heartbeat 10 s: the stop timeout must do it
        tree.wait_for(running(["A", "B", "C"]))
        before = {n: pid_of(tree, n) for n in "ABC"}
        freeze(stopped_pids, before["C"])
        kill(before["B"])
        started = time.monotonic()
        snap = tree.wait_for(
            lambda s: running(["A", "B", "C"])(s) and all(pid_of(s, n) != before[n] for n in "BC"), timeout=10
        )
        assert time.monotonic() - started < 1.0 + 3.0, "C's shutdown timeout (1 s), then a kill"
        assert pid_of(snap, "A") == before["A"]
        assert gone(before["C"])


def test_stop_with_a_hung_child_takes_its_shutdown_timeout_then_kills_it(stopped_pids: list[int]) -> None:
    children = (m.ChildSpec("A", WORKER), m.ChildSpec("B", WORKER, shutdown=1.0), m.ChildSpec("C", WORKER))
    with running_tree(spec(*children)) as tree:
        tree.wait_for(running(["A", "B", "C"]))
        pids = {n: pid_of(tree, n) for n in "ABC"}
        freeze(stopped_pids, pids["B"])
        started = time.monotonic()
        assert isinstance(tree.asys.ask(tree.root, m.StopTree(), 20), m.TreeStopped)
        assert time.monotonic() - started < 1.0 + 2.0
        assert all(gone(pid) for pid in pids.values())


def ask_until(tree: TreeHandle, name: str, message: object, kind: str) -> tuple[object, ...]:
    reply = tree.ask(name, message)
    for _ in range(10):
        if isinstance(reply, tuple) and reply and reply[0] == kind:
            return reply
        reply = tree.asys.listen(5)
    raise AssertionError(f"{name} did not answer {message!r}: {reply!r}")


def test_a_handler_that_raises_crashes_its_actor_which_restarts_fresh() -> None:
    with running_tree(spec(m.ChildSpec("A", WORKER), strategy="one_for_one")) as tree:
        tree.wait_for(running(["A"]))
        first = pid_of(tree, "A")
        ask_until(tree, "A", Remember("state before the crash"), "remembered")
        assert ask_until(tree, "A", Recall(), "recalled")[1] == "state before the crash"
        tree.asys.tell(tree.snapshot().registry["A"], Boom())
        snap = tree.wait_for(lambda s: running(["A"])(s) and pid_of(s, "A") != first, timeout=10)
        assert restarts_of(snap, "A") == 1
        assert gone(first), "the broken actor's process is gone (not kept alive with PoisonMessage)"
        _, memory, pid = ask_until(tree, "A", Recall(), "recalled")
        assert memory is None and pid == pid_of(snap, "A")


def test_restart_counts_survive_a_sub_supervisor_restart() -> None:
    inner = m.ChildSpec(
        "Inner",
        "actors.supervisor:Supervisor",
        strategy="one_for_one",
        children=(m.ChildSpec("Leaf", WORKER),),
    )
    with running_tree(spec(inner, m.ChildSpec("After", WORKER))) as tree:
        tree.wait_for(running(["Inner", "Leaf", "After"]))
        for _ in range(2):
            leaf = pid_of(tree, "Leaf")
            kill(leaf)
            tree.wait_for(lambda s, p=leaf: running(["Leaf"])(s) and pid_of(s, "Leaf") != p)
        inner_pid = pid_of(tree, "Inner")
        kill(inner_pid)
        snap = tree.wait_for(
            lambda s: running(["Inner", "Leaf", "After"])(s) and pid_of(s, "Inner") != inner_pid
        )
        assert restarts_of(snap, "Leaf") == 2, "the new Inner knows its child's count"
        assert restarts_of(snap, "Inner") == 1


def test_admin_restart_is_counted_as_requested() -> None:
    with running_tree(spec(m.ChildSpec("A", WORKER), m.ChildSpec("B", WORKER))) as tree:
        tree.wait_for(running(["A", "B"]))
        b = pid_of(tree, "B")
        reply = tree.asys.ask(tree.root, m.RestartActor("A", None, tag=1), 20)
        assert isinstance(reply, m.AdminReply) and reply.ok, reply
        snap = tree.wait_for(running(["A", "B"]))
        assert (row(snap, "A")["restarts"], row(snap, "A")["requested_restarts"]) == (0, 1)
        assert pid_of(snap, "B") == b, "an admin restart is OTP's restart_child: the sibling stays"
