"""The daemon's process rules (chrnode.procwatch, chrnode.forkhooks) without a node: the rebuild
budget as a pure rule over generated times, wait statuses of real children, and the descriptors a
real forked child keeps."""

from __future__ import annotations

import os
import signal
import socket
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.forkhooks import close_inherited_listeners
from chrnode.heartbeat import Heartbeat
from chrnode.procwatch import RebuildBudget, Watched, describe_status, reap


@given(
    st.integers(0, 5),
    st.floats(0.5, 100),
    st.lists(st.floats(0, 50), max_size=60),
)
@settings(max_examples=300, deadline=None)
def test_rebuild_budget_is_an_intensity_limit(limit: int, window: float, steps: list[float]) -> None:
    budget = RebuildBudget(limit, window)
    now = 0.0
    allowed: list[float] = []
    for step in steps:
        now += step
        recent = [t for t in allowed if now - t <= window]
        verdict = budget.allow(now)
        assert verdict == (len(recent) < limit), (allowed, now)
        if verdict:
            allowed.append(now)


def _child_status(action: str) -> int:
    pid = os.fork()
    if pid == 0:
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    return status


def test_wait_statuses_in_words() -> None:
    assert describe_status(_child_status("kill")) == "killed by SIGKILL"
    assert describe_status(_child_status("exit")) == "exited with status 3"


def test_reap_collects_every_ended_child_without_blocking() -> None:
    pids = set()
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        pids.add(pid)
    ended: dict[int, int] = {}
    deadline = time.monotonic() + 10
    while not pids <= set(ended) and time.monotonic() < deadline:
        ended.update(reap())
        time.sleep(0.01)
    assert pids <= set(ended)
    assert reap() == {}


def test_a_watched_pid_is_not_confused_with_a_reused_one() -> None:
    me = Watched.of("me", os.getpid())
    assert me.alive()
    assert not Watched("me", os.getpid(), me.create_time - 1).alive()


def test_a_forked_child_keeps_no_inherited_listening_socket() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    peer_a, peer_b = socket.socketpair()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        replaced = close_inherited_listeners()
        try:
            listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            still_listening = True
        except OSError:  # the number now holds /dev/null
            still_listening = False
        pair_kept = peer_b.send(b"x") == 1
        os.write(write_fd, f"{replaced} {still_listening} {pair_kept}".encode())
        os._exit(0)
    os.close(write_fd)
    answer = os.read(read_fd, 100).decode()
    os.waitpid(pid, 0)
    try:
        replaced, still_listening, pair_kept = answer.split()
        # 1 here, or 0 when an at-fork hook (chrnode.forkhooks, registered once any test imported
        # the actor system) already replaced it in this child: either way it is gone.
        assert replaced in ("0", "1") and (still_listening, pair_kept) == ("False", "True"), answer
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1, "the parent keeps its own"
    finally:
        os.close(read_fd)
        for sock in (listener, peer_a, peer_b):
            sock.close()


@given(st.floats(0.5, 30), st.lists(st.tuples(st.floats(0, 10), st.booleans()), max_size=50))
def test_heartbeat_is_overdue_exactly_when_no_answer_came_for_the_timeout(
    timeout: float, steps: list[tuple[float, bool]]
) -> None:
    heartbeat = Heartbeat(timeout=timeout)
    heartbeat.start(0.0)
    now = last = 0.0
    for step, answered in steps:
        now += step
        if answered:
            heartbeat.answered(now)
            last = now
        assert heartbeat.overdue(now) == (now - last > timeout)
