"""Thespian's admin port picked by the node (actor_admin_port = 0): free, ours, retried on conflict."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest

from chrnode import actorsys
from chrnode.actorsys import LOOPBACK, AdminPortTaken, bind_error, shutdown_system, start_system_on


@pytest.fixture
def taken() -> Iterator[int]:
    """A port held by a listening socket of this test (not an actor system)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_port_zero_starts_on_a_free_port_that_it_then_holds() -> None:
    asys, port = start_system_on(0, level="warning")
    try:
        assert 0 < port < 65536
        assert bind_error(LOOPBACK, port) is not None, "the admin listens on the port it reported"
    finally:
        shutdown_system(asys)
    assert bind_error(LOOPBACK, port) is None


def test_a_system_that_another_process_started_is_refused_and_left_alone() -> None:
    """The race `_check_port_free` cannot close: the port's admin is somebody else's by the time
    Thespian connects. Joining it must be refused without shutting it down."""
    from thespian.actors import ActorSystem
    from thespian.system.messages.status import Thespian_StatusReq, Thespian_SystemStatus

    theirs, port = start_system_on(0, level="warning")
    try:
        joined = ActorSystem("multiprocTCPBase", {"Admin Port": port}, transientUnique=True)
        with pytest.raises(AdminPortTaken, match=f"another actor system answered on 127.0.0.1:{port}"):
            actorsys._verify_ours(joined, port, "a nonce that system never saw")
        admin = theirs._systemBase.adminAddr
        status = theirs.ask(admin, Thespian_StatusReq(), timedelta(seconds=10))
        assert isinstance(status, Thespian_SystemStatus) and not status.inShutdown
    finally:
        shutdown_system(theirs)


def test_a_taken_pick_is_retried_on_another_port(taken: int, monkeypatch: pytest.MonkeyPatch) -> None:
    picks = iter([taken])
    real = actorsys.free_port
    monkeypatch.setattr(actorsys, "free_port", lambda: next(picks, None) or real())
    asys, port = start_system_on(0, level="warning")
    try:
        assert port != taken
    finally:
        shutdown_system(asys)


def test_a_fixed_port_that_is_taken_is_a_clear_error(taken: int) -> None:
    with pytest.raises(
        AdminPortTaken, match=f"actor_admin_port 127.0.0.1:{taken} is in use.*CHR_ACTOR_ADMIN_PORT"
    ):
        start_system_on(taken)
