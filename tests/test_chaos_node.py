"""Chaos on a real `chr-node start`, as tools/chaos does it, on a representative subset (issue 9,
"How it will be checked"): a leaf, a sub-supervisor, the network process and Thespian's logger
SIGKILLed, one actor SIGSTOPped, with two devices relaying a checked byte stream and the RPC
polled throughout. Each round ends whole or with a non-zero exit and a clear line, never a
half-alive daemon; the port survives the crash of an actor device traffic does not need.
tools/chaos runs every process (docs/operations.md)."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chrnode.identity import edge_client_context
from chrnode.ports_file import read_ports
from chrnode.testing.chaos import SPARED, Chaos, Round, hang_logged, table
from chrnode.testing.chaos_probes import RpcPoller, pattern
from chrnode.testing.node import NodeProcess

# ---- the probes' own rules (microseconds) -------------------------------------------------------


@given(st.integers(0, 10**9), st.lists(st.integers(1, 5000), min_size=1, max_size=20))
def test_the_relayed_pattern_reads_the_same_in_any_chunking(start: int, sizes: list[int]) -> None:
    whole = pattern(start, sum(sizes))
    offset, parts = start, []
    for size in sizes:
        parts.append(pattern(offset, size))
        offset += size
    assert b"".join(parts) == whole
    assert len(whole) == sum(sizes)


@given(st.integers(0, 10**6), st.integers(1, 5000))
def test_a_lost_chunk_shows_as_wrong_bytes(start: int, size: int) -> None:
    # what the reader expects after `start` bytes, against what it gets if `size` were lost
    assert pattern(start, 251) != pattern(start + size, 251) or size % 251 == 0


@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=50, unique=True))
def test_the_rpc_gap_is_the_longest_silence_around_a_round(offsets: list[float]) -> None:
    poller = RpcPoller(0, every=0.1)
    poller.answered = sorted(100.0 + o * 10 for o in offsets)
    times = poller.answered
    gap = poller.gap(times[0], times[-1])
    longest = max(b - a for a, b in itertools.pairwise(times))
    assert gap == pytest.approx(max(longest - 0.1, 0.0))


def test_a_round_is_ok_only_whole_or_gone_non_zero_and_spared_ports_kept() -> None:
    assert Round("Stats", "SIGKILL", "whole", 0.5, True, 0.0).ok
    assert not Round("Stats", "SIGKILL", "whole", 0.5, False, 0.0).ok, "Stats is spared"
    assert Round("Network.EdgeV2.Listener", "SIGKILL", "whole", 0.5, False, 0.3).ok
    assert Round("Thespian admin", "SIGKILL", "gave up (exit 1)", 2.0, None, 2.0).ok
    assert not Round("Globals", "SIGKILL", "HALF-ALIVE after 60 s: no Thespian admin", 60, True, 60).ok
    assert not Round("Globals", "SIGKILL", "EXITED 0 after a failure", 1, None, 1).ok
    assert not Round("Cron", "SIGSTOP", "whole", 3.0, True, 0.0, reported=False).ok
    assert "Stats" in SPARED and "Network.EdgeV2.Listener" not in SPARED


def test_a_hang_counts_as_logged_from_the_supervisors_or_the_daemons_own_line() -> None:
    supervisor = "ERROR   chrnode.actor.Model.Sql: Model.Sql.Worker is hung: did not answer a heartbeat"
    daemon = "ERROR   chrnode.daemon: root supervisor (pid 41) was stopped (SIGSTOP) for 5 s: killed it"
    admin = "ERROR   chrnode.daemon: Thespian admin (pid 40) was stopped (SIGSTOP) for 5 s: killed it"
    assert hang_logged(supervisor, "Model.Sql.Worker", 7)
    assert not hang_logged(supervisor, "Model.Sql", 7)
    assert hang_logged(daemon, "ChronaraNode.Supervisor", 41)
    assert not hang_logged(daemon, "ChronaraNode.Supervisor", 42), "another pid"
    assert hang_logged(admin, "Thespian admin", 40)
    assert not hang_logged("", "Cron", 1)


# ---- on a running node ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    node = NodeProcess(tmp_path_factory.mktemp("chaos") / "data", CHR_HEARTBEAT_TIMEOUT="3").start()
    try:
        with Chaos.on(node, whole_timeout=45) as chaos:
            yield chaos
    finally:
        if node.proc is not None and node.proc.poll() is None:
            assert node.stop() == 0, node.log()
        assert node.leftovers() == []


slow = pytest.mark.slow


def _whole(done: Round, chaos: Chaos) -> None:
    assert done.outcome == "whole", f"{done}\n{chaos.node.log()}"
    assert chaos.not_whole() is None


@slow
def test_the_node_is_whole_with_the_port_relaying_before_any_signal(chaos: Chaos) -> None:
    assert chaos.not_whole() is None
    assert chaos.relay.flowing(), chaos.relay.broken
    assert chaos.poller.answered, "the RPC poller got answers"
    # ps tells every actor apart: one process a name, the footing included
    seen = chaos.ps()
    for name in chaos.processes:
        assert len(seen[f"chr-node: {name}"]) == 1, name


@slow
@pytest.mark.parametrize(
    ("name", "spared"),
    [
        ("Stats", True),  # a leaf that device traffic does not need
        ("Model.Sql", False),  # a sub-supervisor (its Worker and Cache come back with it)
        ("Network.EdgeV2.Listener", False),  # the network process: it holds the device sessions
        ("Thespian logger", True),  # replaced by the admin; the tree stays in its processes
    ],
)
def test_sigkill_ends_whole_again(chaos: Chaos, name: str, spared: bool) -> None:
    old = chaos.pid_of(name)
    done = chaos.kill(name)
    _whole(done, chaos)
    assert chaos.pid_of(name) != old
    assert done.seconds < 15, done
    if spared:
        assert done.port_survived, f"the relayed port was cut by {name}'s crash: {chaos.relay.broken}"
        assert done.rpc_gap < 1.0, done
    else:
        chaos.relay.reconnect()  # devices reconnect after the node closed their sessions
        assert chaos.relay.flowing()


@slow
def test_a_killed_listeners_device_ports_stay_the_nodes_and_a_device_connecting_meanwhile_is_served(
    chaos: Chaos,
) -> None:
    """The daemon holds the listening sockets (chrnode.held_ports): the old listener's death frees
    no port, so no other program can take it before the replacement is up (the test used to take
    it and check that the listener waited for it), and a device that connects while the listener
    restarts waits in the kernel's queue and is served by the replacement."""
    ports = chaos.node.edge_ports
    old = chaos.pid_of("Network.EdgeV2.Listener")
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(old) and psutil.Process(old).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the killed listener did not die"
        time.sleep(0.005)
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        with pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", ports[0]))
    finally:
        other.close()
    early = socket.create_connection(("127.0.0.1", ports[0]), timeout=5)  # queued, not refused
    try:
        early.settimeout(30)
        with edge_client_context().wrap_socket(early, server_hostname=None) as tls:
            assert tls.version() == "TLSv1.2"  # the replacement took it from the queue
    finally:
        early.close()
    assert chaos.wait_whole() == "whole", chaos.not_whole()
    assert read_ports(chaos.node.data_dir)["edge2"] == ports
    chaos.relay.reconnect()


@slow
def test_sigstop_is_reported_replaced_and_nothing_is_left_stopped(chaos: Chaos) -> None:
    old = chaos.pid_of("Cron")
    started = time.monotonic()
    done = chaos.freeze("Cron")
    _whole(done, chaos)
    assert done.reported, "the supervisor logged Cron as hung"
    log = (chaos.node.data_dir / "chr-node.log").read_text()
    assert "Cron is hung: did not answer a heartbeat within 3 s; killing it" in log, "said once, plainly"
    assert done.port_survived
    # the heartbeat timeout (3 s) counts from the last answer, which came up to one heartbeat
    # (1 s) before the SIGSTOP; then a kill and a restart
    assert 3.0 - 1.0 <= done.seconds < 3.0 + 10, done
    assert chaos.pid_of("Cron") != old
    assert not any(label.endswith("(stopped)") for label in chaos.ps()), chaos.ps()
    assert time.monotonic() - started < 20
    print(table(chaos.rounds))


@slow
def test_a_child_killed_and_its_replacement_killed_as_it_starts_end_whole(chaos: Chaos) -> None:
    done = chaos.kill_replacement("Connectivity")
    _whole(done, chaos)
    assert done.port_survived, "Connectivity is spared: the relayed port stays open"


@slow
def test_the_signals_used_are_those_an_operator_sends(chaos: Chaos) -> None:
    assert {r.signal for r in chaos.rounds} <= {signal.SIGKILL.name, signal.SIGSTOP.name, "SIGKILL x2"}
    assert all(r.ok for r in chaos.rounds), table(chaos.rounds)


def test_tools_chaos_refuses_bad_arguments(tmp_path: Path) -> None:
    import subprocess
    import sys

    from chrnode.testing.anvil import REPO_ROOT

    tool = [sys.executable, str(REPO_ROOT / "tools" / "chaos")]
    bad = subprocess.run([*tool, "--signals", "hup"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--signals takes kill, stop, replace, sibling" in bad.stderr
    bad = subprocess.run([*tool, "--repeat", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--repeat must be at least 1" in bad.stderr
