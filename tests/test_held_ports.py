"""chrnode.held_ports: the daemon's listening sockets, kept across a listener's restart (real
sockets on loopback, a real fork standing for the listener's process)."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from chrnode import forkhooks, held_ports
from chrnode.actorsys import bind_error


@pytest.fixture(autouse=True)
def nothing_held() -> Iterator[None]:
    held_ports.release_all()
    yield
    held_ports.release_all()


def taken(port: int) -> bool:
    error = bind_error("127.0.0.1", port)  # SO_REUSEADDR: only a listening socket blocks it
    assert error is None or error.errno == errno.EADDRINUSE, error
    return error is not None


def test_a_port_not_held_is_not_given_and_port_0_never_is() -> None:
    assert held_ports.take("127.0.0.1", 41046) is None
    port = held_ports.hold("127.0.0.1", 0)
    assert held_ports.take("127.0.0.1", 0) is None  # 0 means "bind a fresh one", never a held one
    assert held_ports.take("0.0.0.0", port) is None  # another address is another socket
    assert held_ports.held() == [("127.0.0.1", port)]


def test_closing_a_copy_keeps_the_port_and_its_backlog() -> None:
    port = held_ports.hold("127.0.0.1", 0)
    copies = held_ports.take("127.0.0.1", port)
    assert copies is not None and len(copies) == 1
    copies[0].close()  # a listener's stop
    assert taken(port)
    with socket.create_connection(("127.0.0.1", port), timeout=5):  # queued, not refused
        (again,) = held_ports.take("127.0.0.1", port) or []
        conn, _ = again.accept()  # the replacement accepts what waited
        conn.close()
        again.close()
    held_ports.release_all()
    assert not taken(port) and held_ports.held() == []


def test_a_forked_listener_serves_the_held_socket_and_its_death_frees_nothing() -> None:
    port = held_ports.hold("127.0.0.1", 0)
    keep = held_ports.fds()
    for _ in range(2):  # a listener, then its replacement
        pid = os.fork()
        if pid == 0:  # the listener's process: what every forked process of the node does first
            code = 1
            try:
                forkhooks.close_inherited_listeners(keep=keep)
                (sock,) = held_ports.take("127.0.0.1", port) or []
                conn, _ = sock.accept()
                conn.sendall(b"served by %d" % os.getpid())
                conn.close()
                code = 0
            finally:
                os._exit(code)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            assert client.recv(64) == b"served by %d" % pid
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert taken(port), "the listener's death left the port free"


def test_inherited_listeners_not_held_are_still_closed_in_a_child() -> None:
    held = held_ports.hold("127.0.0.1", 0)
    stray = socket.socket()
    stray.bind(("127.0.0.1", 0))
    stray.listen()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            forkhooks.close_inherited_listeners(keep=held_ports.fds())
            os.write(write, repr(sorted(forkhooks.listening_fds())).encode())
        finally:
            os._exit(0)
    os.close(write)
    seen = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    stray.close()
    assert seen == repr(sorted(held_ports.fds())), f"the child kept {seen}; held {held}"
