"""The device port under pressure (issue 8): caps per address, the handshake deadline, shedding of
silent sockets, running out of descriptors. A real EdgeServer on loopback, raw TCP attackers."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chrnode.crypto import PrivateKey
from chrnode.fdlimit import MAX_PAUSE, QUIET
from chrnode.testing.edge import NodeThread

NOTIFY = 0x0B


def _silent(port: int, source: str) -> socket.socket:
    """A TCP connection that never starts TLS."""
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _counts(thread: NodeThread, ip: str) -> tuple[int, int]:
    return thread.run(lambda: thread.node.server.admission.count_of(ip))


def test_one_address_holds_at_most_its_cap_and_a_newcomer_from_it_still_gets_in(tmp_path: Path) -> None:
    thread = NodeThread(tmp_path, max_conns_per_ip=4, handshake_deadline=30.0, hello_timeout=30.0)
    try:
        port = thread.node.port
        silent = [_silent(port, "127.0.0.9") for _ in range(3)]
        time.sleep(0.5)
        # TCP_DEFER_ACCEPT holds back sockets that say nothing: the node has not seen them.
        assert _counts(thread, "127.0.0.9") == (0, 0)
        stalled = []
        for _ in range(10):  # a first byte of a TLS record and then nothing: accepted, stalled
            sock = _silent(port, "127.0.0.9")
            sock.sendall(b"\x16")
            stalled.append(sock)
        deadline = time.monotonic() + 5
        while _counts(thread, "127.0.0.9")[0] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert _counts(thread, "127.0.0.9") == (4, 4), "the address holds its cap, no more"
        assert sum(_closed_within(sock, 0.5) for sock in stalled) == 6, "the oldest were shed"
        honest = thread.raw(source="127.0.0.9")  # sheds the oldest stalled one, then says hello
        assert honest.hello(PrivateKey.generate(), thread.node.address)["node"] == thread.node.address
        assert _counts(thread, "127.0.0.9")[0] == 4
        assert thread.run(lambda: thread.node.server.admission.pending_count) == 3
        other = thread.raw(source="127.0.1.9")  # another address is not affected at all
        assert other.hello(PrivateKey.generate(), thread.node.address)["node"] == thread.node.address
        for sock in silent + stalled:
            sock.close()
    finally:
        thread.stop()


def test_silent_sockets_are_cut_at_the_handshake_deadline_and_shed_for_talkers(tmp_path: Path) -> None:
    thread = NodeThread(tmp_path, max_conns_per_ip=3, handshake_deadline=1.0, hello_timeout=30.0)
    try:
        port = thread.node.port
        started = time.monotonic()
        silent = [_silent(port, "127.0.0.7") for _ in range(6)]
        # After the kernel's defer (1 s) the node accepts them, holds 3 (its cap for the address)
        # and cuts each at the 1 s deadline; none outlives a few seconds.
        assert all(_closed_within(sock, 8.0) for sock in silent)
        assert time.monotonic() - started < 8.0
        snapshot = thread.run(lambda: thread.node.server.snapshot())
        admission = snapshot["admission"]
        assert admission["expired_total"] + admission["shed_total"] >= 6
        assert admission["pending"] == 0
        # TLS up but no hello: also cut at the deadline (hello_timeout is 30 s here).
        mute = thread.raw(source="127.0.0.8")
        msg_type, _flags, payload = mute.recv()
        assert msg_type == NOTIFY and payload["code"] == "timeout", payload
        assert "1 s of connecting" in payload["message"] and "127.0.0.8" not in payload["message"]
        for sock in silent:
            sock.close()
    finally:
        thread.stop()


@contextlib.contextmanager
def _descriptor_limit(spare: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + spare, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_out_of_descriptors_the_device_port_backs_off_logs_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="chrnode.edge")
    thread = NodeThread(tmp_path)
    try:
        port = thread.node.port
        clients: list[socket.socket] = []
        with _descriptor_limit(60):
            try:
                while True:
                    sock = socket.socket()
                    clients.append(sock)
                    sock.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        sock.connect(("127.0.0.1", port))
                    sock.send(b"\x16")  # a first byte, so TCP_DEFER_ACCEPT lets it through
            except OSError as exc:
                assert exc.errno == errno.EMFILE
            time.sleep(1.5)
            for sock in clients:
                sock.close()
            time.sleep(MAX_PAUSE + 0.5)
        time.sleep(QUIET)
        honest = thread.raw()
        assert honest.hello(PrivateKey.generate(), thread.node.address)["node"] == thread.node.address
    finally:
        thread.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("is out of descriptors" in line for line in lines) == 1, lines
    assert sum("accepts again; it was out of descriptors" in line for line in lines) == 1, lines
    assert not any(r.exc_info for r in caplog.records)
