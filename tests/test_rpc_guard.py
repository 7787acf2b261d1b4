"""The JSON-RPC ports under abuse (chrnode.rpc.guard, chrnode.fdlimit): deadlines, the cap,
running out of descriptors. Real Tornado servers on loopback."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chrnode.fdlimit import MAX_PAUSE, QUIET, AcceptPause, raise_nofile_limit
from chrnode.rpc.api import NodeView
from chrnode.rpc.guard import FD_RESERVE, RpcLimits
from chrnode.testing.rpc import ServedApp, http_post, rpc_factory

INFO = b'{"jsonrpc": "2.0", "id": 1, "method": "chr_node_info"}'


def _served(**limits: float) -> ServedApp:
    view = NodeView()
    view.set_part("node", {"address": "0x" + "11" * 20})
    return ServedApp(rpc_factory(view), limits=RpcLimits(**limits))  # type: ignore[arg-type]


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``, and what it sent first."""
    sock.settimeout(seconds)
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return False, got
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def test_a_body_that_trickles_is_cut_with_408_and_others_are_served() -> None:
    with _served(body_timeout=0.5, header_timeout=5.0) as served:
        slow = socket.create_connection(("127.0.0.1", served.port))
        slow.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[")
        started = time.monotonic()
        assert http_post(served.port, "/rpc", INFO)[0] == 200
        slow.sendall(b" ")
        closed, answer = _closed_within(slow, 5.0)
        assert closed and answer.startswith(b"HTTP/1.1 408 "), answer
        assert time.monotonic() - started < 3.0  # 0.5 s plus at most a sweep of 1 s
        slow.close()


def test_headers_that_never_end_are_cut_and_idle_connections_closed_silently() -> None:
    with _served(header_timeout=0.5) as served:
        partial = socket.create_connection(("127.0.0.1", served.port))
        partial.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        idle = socket.create_connection(("127.0.0.1", served.port))  # says nothing at all
        closed, answer = _closed_within(partial, 5.0)
        assert closed and answer.startswith(b"HTTP/1.1 408 ")
        closed, answer = _closed_within(idle, 5.0)
        assert closed and answer == b""  # no answer to a request that was never sent
        partial.close()
        idle.close()
        assert http_post(served.port, "/rpc", INFO)[0] == 200


def test_at_the_cap_the_oldest_idle_connection_makes_room() -> None:
    with _served(max_connections=5) as served:
        idle = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(5)]
        time.sleep(0.2)  # all five accepted, in order
        assert http_post(served.port, "/rpc", INFO)[0] == 200  # a sixth: the oldest idle one goes
        closed, _ = _closed_within(idle[0], 3.0)
        assert closed
        assert not _closed_within(idle[4], 0.2)[0]
        for sock in idle:
            sock.close()


def test_the_cap_stays_below_the_descriptor_limit() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert RpcLimits(max_connections=10**6).effective_cap() == soft - FD_RESERVE
    assert RpcLimits(max_connections=3).effective_cap() == 3
    assert raise_nofile_limit(soft)[1] == soft


@contextlib.contextmanager
def _descriptor_limit(spare: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + spare, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_out_of_descriptors_accept_backs_off_logs_once_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="chrnode.rpc")
    with _served() as served:
        clients: list[socket.socket] = []
        with _descriptor_limit(60):
            # Client sockets of this process use up the descriptors the server would accept with.
            try:
                while True:
                    sock = socket.socket()
                    clients.append(sock)
                    sock.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        sock.connect(("127.0.0.1", served.port))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
            time.sleep(1.5)  # the accept loop meets EMFILE and waits (50 ms doubling to 1 s)
            for sock in clients[: len(clients) // 2]:
                sock.close()
            time.sleep(MAX_PAUSE + 0.5)
        assert http_post(served.port, "/rpc", INFO)[0] == 200
        for sock in clients:
            sock.close()
        time.sleep(QUIET)
        assert http_post(served.port, "/rpc", INFO)[0] == 200  # quiet for long enough: it ends
    lines = [r.getMessage() for r in caplog.records]
    assert sum("out of descriptors (EMFILE" in line for line in lines) == 1, lines
    assert sum("accepts again; it was out of descriptors" in line for line in lines) == 1, lines
    assert not any(r.exc_info for r in caplog.records)


@given(st.lists(st.tuples(st.booleans(), st.floats(0.0, 3.0)), max_size=60))
def test_accept_pause_doubles_to_a_second_and_counts_episodes(outcomes: list[tuple[bool, float]]) -> None:
    pause = AcceptPause()
    episodes = failures = 0
    now = last_failure = 0.0
    delay_before = 0.0  # the previous pause, 0 after a success
    for failed, step in outcomes:
        now += step
        if failed:
            delay, starts = pause.failed(now)
            assert starts == (failures == 0)
            episodes += starts
            assert delay == (pause.first if delay_before == 0.0 else min(delay_before * 2, MAX_PAUSE))
            delay_before = delay
            failures += 1
            last_failure = now
        else:
            ended = pause.succeeded(now)
            delay_before = 0.0
            quiet = failures > 0 and now - last_failure >= QUIET
            assert (ended is not None) == quiet
            if ended is not None:
                assert ended[0] == failures
                failures = 0
    assert pause.episodes == episodes and pause.in_episode == (failures > 0)
