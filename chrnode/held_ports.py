"""The node's listening sockets, opened once by the daemon and inherited by every process it forks
(socket activation, as systemd does it).

A listener that binds its own port lets the port go free whenever it restarts; between its death
and its replacement's bind, any socket on the machine may take that port, the node's own included
(a Thespian actor's port or an outgoing connection comes from the same ephemeral range as a port
configured 0): the replacement then cannot bind it, and devices lose the port they were told. So
the daemon binds every listening port before the actor system exists (`hold`), keeps the sockets
open for as long as it runs, and a listener takes a copy of the held socket (`take`) instead of
binding. The port is then never free while the node runs; connections that arrive while its
listener restarts wait in the kernel's backlog for the replacement instead of being refused.

    hold("0.0.0.0", 0)          # in the daemon: the bound port, e.g. 41046
    take("0.0.0.0", 41046)      # in a listener: [socket] (a dup of the held one), or None

A process that the daemon did not fork (a test's actor system, a bench) holds nothing: `take`
answers None and the listener binds as before.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

Binder = Callable[[str, int], list[socket.socket]]

BACKLOG = 1024  # until the listener sets its own (listen() again on the copy)

_held: dict[tuple[str, int], list[socket.socket]] = {}


def tcp_listener(host: str, port: int, backlog: int = BACKLOG) -> list[socket.socket]:
    """One listening TCP socket on (host, port) (0: the OS picks), SO_REUSEADDR, blocking."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return [sock]


def hold(host: str, port: int, binder: Binder = tcp_listener) -> int:
    """Bind (host, port) with `binder` and keep its sockets open in this process (and so in every
    process forked from it); the bound port. OSError when it cannot be bound."""
    sockets = binder(host, port)
    bound = int(sockets[0].getsockname()[1])
    _held[(host, bound)] = sockets  # never held yet: a held port is listening, so binder refused it
    return bound


def take(host: str, port: int) -> list[socket.socket] | None:
    """Copies of the sockets held for (host, port), or None when this process holds none (then
    the caller binds the port itself). Closing a copy leaves the held socket listening."""
    sockets = _held.get((host, port)) if port else None
    if not sockets:
        return None
    return [sock.dup() for sock in sockets]


def fds() -> frozenset[int]:
    """The descriptors of the held sockets (kept open across forks: chrnode.forkhooks)."""
    return frozenset(sock.fileno() for sockets in _held.values() for sock in sockets)


def held() -> list[tuple[str, int]]:
    """The (host, port) pairs held in this process."""
    return sorted(_held)


def release_all() -> None:
    """Close every held socket (the daemon, once its tree is gone)."""
    for sockets in _held.values():
        for sock in sockets:
            sock.close()
    _held.clear()
