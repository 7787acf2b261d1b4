"""Starting and stopping the Thespian actor system safely (SPEC 9).

Two things Thespian does not do on its own, done here before any actor exists:

* Its admin and actor ports unpickle whatever they receive, and for "external" addresses it binds
  to every interface (`bindname = ('', port)` in `IPActorAddress`). `loopback_only()` makes every
  Thespian socket bind to 127.0.0.1, so nothing beyond this machine can reach them.
* Each actor is a forked process; if the daemon is killed, Thespian's admin and actors would live
  on, holding ports. `die_with_parent()` sets `PR_SET_PDEATHSIG` in every forked child, so the
  whole tree goes when its parent goes (and a killed supervisor takes its children with it, as an
  OTP supervisor does).

And one for tests and operators: `actor_admin_port = 0` picks a free port. Thespian must be told a
number, so another process may take it between the pick and Thespian's bind; the started system is
checked to be this process's own (a nonce capability) and another port is tried on a conflict.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import secrets
import signal
import socket
import threading
import time
from datetime import timedelta
from typing import Any

from chrnode import forkhooks, held_ports, logsink
from chrnode.errors import ActorError

log = logging.getLogger("chrnode.actorsys")

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_patched = threading.Event()


def loopback_only() -> None:
    """Patch Thespian's IP addresses to bind to 127.0.0.1 instead of all interfaces."""
    if _patched.is_set():
        return
    from thespian.system.transport import IPBase

    original = IPBase.IPActorAddress.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        host, port = self.bindname[0], self.bindname[1]
        if host in ("", "0.0.0.0"):
            self.bindname = (LOOPBACK, port)

    IPBase.IPActorAddress.__init__ = init
    # The address Thespian advertises (and connects to) must be loopback too.
    os.environ["THESPIAN_BASE_IPADDR"] = LOOPBACK
    _patched.set()


def _remember_parent() -> None:
    global _parent_pid
    _parent_pid = os.getpid()
    # Move every object the parent holds out of the collector's reach: the child's collections
    # then never write to those pages, which stay shared instead of being copied in every
    # process (Python's gc.freeze documentation: before fork, in the parent). The parent takes
    # them back at once (_after_fork_in_parent), so its own garbage is still collected.
    gc.freeze()


def _after_fork_in_parent() -> None:
    gc.unfreeze()


def _after_fork_in_child() -> None:
    # Every process of the node, first thing: hold only its own sockets (and the node's public
    # ports the daemon holds for every listener, chrnode.held_ports), log through the
    # daemon's single writer (chrnode.logsink), and die with the process that forked it.
    forkhooks.close_inherited_listeners(keep=held_ports.fds())
    logsink.route_child_logging()
    _set_pdeathsig()


def _set_pdeathsig() -> None:
    global _admin_starting
    if _admin_starting:
        # This is Thespian's admin: it daemonized (setsid, double fork), so its parent is already
        # gone. It watches the daemon instead; its actors get PR_SET_PDEATHSIG as usual.
        _admin_starting = False
        _watch_daemon(_daemon_pid)
        return
    if _prctl is None:  # not Linux: the admin's watchdog still applies
        return
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != _parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _watch_daemon(daemon_pid: int) -> None:
    """In Thespian's admin: when the daemon is gone, kill the admin's whole process group (the
    admin, its logger and every actor), so a SIGKILLed daemon leaves nothing behind."""

    def watch() -> None:
        while True:
            time.sleep(0.2)
            try:
                os.kill(daemon_pid, 0)
            except ProcessLookupError:
                os.killpg(os.getpgid(0), signal.SIGKILL)
            except PermissionError:  # the pid was reused by another user's process
                os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="chr-node-daemon-watch", daemon=True).start()


_fork_hook = threading.Event()
_admin_starting = False
_daemon_pid = 0
_parent_pid = 0
_prctl: Any = None  # libc's prctl, looked up once in the daemon (each child loading it cost 0.1 MiB)


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _warm_for_children() -> None:
    """Do once in the daemon, before the first fork, what every child would otherwise do for the
    first time on its own: pages written by a first use become a private copy in each process.

    * OpenSSL's first context, certificate load and handshake fetch its providers and methods
      (about 0.7 MiB in each process that makes a TLS context: the edge listener, HTTPS RPC); the
      check that this OpenSSL offers the EdgeV2 suite (SPEC 3) does all of that, in memory.
    * The probe of inherited descriptors and the child's log handler (chrnode.logsink) are built
      or run here, so a child only uses them; the ABCs' isinstance caches are filled
      (chrnode.forkhooks.warm_abc_caches); setproctitle is imported.
    """
    global _prctl
    if _prctl is None:
        _prctl = _load_prctl()
    forkhooks.listening_fds()  # only looks: the daemon keeps its sockets
    forkhooks.warm_abc_caches()
    forkhooks.prepare_titles()
    logsink.prepare_child_handler()
    from chrnode.errors import CryptoError
    from chrnode.identity import check_secp256k1_tls_support

    try:
        check_secp256k1_tls_support()
    except CryptoError as exc:  # the edge listener reports it when it makes its context
        log.warning("%s", exc)


def die_with_parent() -> None:
    """Every process forked from now on dies when the process that forked it dies; Thespian's
    admin (which detaches itself) dies with the process that started the actor system."""
    if _fork_hook.is_set():
        return
    from thespian.system import multiprocCommon

    original = multiprocCommon.startAdmin

    def start_admin(*args: Any, **kwargs: Any) -> Any:
        # Runs in the first child; it forks the real admin and exits (Thespian's daemonizing).
        global _admin_starting
        _admin_starting = True
        return original(*args, **kwargs)

    multiprocCommon.startAdmin = start_admin
    # Thespian re-points each process's logging at its logger process; with a sink, every
    # process keeps the root logger that sends to the daemon's single writer instead.
    multiprocCommon.ThespianLogForwarder = logsink.thespian_root
    forkhooks.patch_thespian()
    os.register_at_fork(
        before=_remember_parent, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
    _fork_hook.set()


def log_defs(level: str, log_file: str | None) -> dict[str, Any]:
    """logging.config dict for Thespian's logger process: stderr plus an optional file."""
    fmt = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    handlers: dict[str, Any] = {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
    }
    if logsink.active() is not None:  # the daemon writes stderr and the file (chrnode.logsink)
        handlers = {"sink": {"()": "chrnode.logsink.sink_handler"}}
    elif log_file:
        handlers["file"] = {
            "class": "logging.handlers.RotatingFileHandler",
            "formatter": "plain",
            "filename": log_file,
            "maxBytes": 10 * 1024 * 1024,
            "backupCount": 3,
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": fmt}},
        "filters": {"notthespian": {"()": "chrnode.logsink.NotThespianFilter"}},
        "handlers": {name: {**h, "filters": ["notthespian"]} for name, h in handlers.items()},
        # The logger process passes everything; each actor filters at its own level, which
        # admin_set_log_level changes at run time (SPEC 8).
        "root": {"handlers": list(handlers), "level": "DEBUG"},
    }


def bind_error(host: str, port: int) -> OSError | None:
    """Why (host, port) cannot be bound right now, or None when it can."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        return exc
    finally:
        probe.close()
    return None


def _check_port_free(port: int) -> None:
    # Thespian joins an existing system when its admin port is taken, which would graft this node
    # onto another running node: refuse instead (and `_verify_ours` catches the race after it).
    error = bind_error(LOOPBACK, port)
    if error is not None:
        raise AdminPortTaken(
            f"actor_admin_port 127.0.0.1:{port} is in use ({error.strerror}); is another chr-node running? "
            "set CHR_ACTOR_ADMIN_PORT to a free port, or to 0 to let the node pick one"
        ) from error


class AdminPortTaken(ActorError):
    """The admin port is (or became) someone else's: another actor system or another program."""


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (tests, tools)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


ADMIN_PORT_ATTEMPTS = 5
_INSTANCE = "chr-node instance"  # a capability naming the system this process started


def start_system(admin_port: int, level: str = "info", log_file: str | None = None) -> Any:
    """Start a fresh multiprocTCPBase system on `admin_port` (loopback only); see `start_system_on`."""
    return start_system_on(admin_port, level, log_file)[0]


def start_system_on(admin_port: int, level: str = "info", log_file: str | None = None) -> tuple[Any, int]:
    """Start a fresh multiprocTCPBase system; returns it and its admin port.

    Port 0 picks a free port. Thespian needs a number before it binds, so a port picked free can
    be taken by another process in between; the system is then checked to be the one this call
    started (`_verify_ours`), and on a conflict another port is tried, up to ADMIN_PORT_ATTEMPTS.
    """
    attempts = ADMIN_PORT_ATTEMPTS if admin_port == 0 else 1
    for attempt in range(1, attempts + 1):
        port = admin_port or free_port()
        try:
            return _start_once(port, level, log_file), port
        except AdminPortTaken as exc:
            if attempt == attempts:
                raise
            log.info("actor admin port %d was taken (%s); trying another", port, exc)
    raise AssertionError("unreachable")  # pragma: no cover


def _start_once(admin_port: int, level: str, log_file: str | None) -> Any:
    global _daemon_pid
    _check_port_free(admin_port)
    _daemon_pid = os.getpid()
    loopback_only()
    die_with_parent()
    _warm_for_children()
    from thespian.actors import ActorSystem, InvalidActorAddress

    nonce = secrets.token_hex(16)
    try:
        asys = ActorSystem(
            "multiprocTCPBase",
            {"Admin Port": admin_port, "Process Startup Method": "fork", _INSTANCE: nonce},
            logDefs=log_defs(level, log_file),
        )
    except (OSError, InvalidActorAddress) as exc:
        raise ActorError(f"could not start the actor system on 127.0.0.1:{admin_port}: {exc}") from exc
    except Exception as exc:  # Thespian raises bare exceptions on start-up failures
        raise ActorError(f"could not start the actor system on 127.0.0.1:{admin_port}: {exc}") from exc
    _verify_ours(asys, admin_port, nonce)
    return asys


def _verify_ours(asys: Any, admin_port: int, nonce: str) -> None:
    """Refuse a system that another process started on the port after `_check_port_free` looked:
    its admin lacks this call's nonce. It is left running (it is someone else's)."""
    from thespian.system.messages.status import Thespian_StatusReq, Thespian_SystemStatus

    admin = getattr(getattr(asys, "_systemBase", None), "adminAddr", None)
    status = asys.ask(admin, Thespian_StatusReq(), timedelta(seconds=10)) if admin is not None else None
    if isinstance(status, Thespian_SystemStatus) and status.capabilities.get(_INSTANCE) == nonce:
        return
    # Not ours: forget the handle (Thespian would hand it to the next ActorSystem() as its
    # singleton) without asking that system to shut down.
    if getattr(type(asys), "systemBase", None) is getattr(asys, "_systemBase", None):
        delattr(type(asys), "systemBase")
    close_handle(asys)
    raise AdminPortTaken(
        f"another actor system answered on 127.0.0.1:{admin_port} (another chr-node?); "
        "set CHR_ACTOR_ADMIN_PORT to a free port, or to 0 to let the node pick one"
    )


def shutdown_system(asys: Any) -> None:
    """`asys.shutdown()`, then collect the sockets Thespian's external handle leaves unclosed
    (they would surface as ResourceWarnings at an arbitrary later moment)."""
    try:
        asys.shutdown()
    finally:
        close_handle(asys)


def close_handle(asys: Any) -> None:
    """Close the sockets of an external handle without shutting the actor system down (for a
    `transientUnique` handle, whose shutdown() would stop the whole system)."""
    import warnings

    transport = getattr(getattr(asys, "_systemBase", None), "transport", None)
    sockets = [getattr(transport, "socket", None)]
    for opened in list(getattr(transport, "_openSockets", {}).values()):
        sockets.append(getattr(opened, "socket", None))
    for incoming in list(getattr(transport, "_incomingSockets", {}).values()):
        sockets.append(getattr(incoming, "socket", None))
    for sock in sockets:
        if sock is not None and hasattr(sock, "close"):
            sock.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del asys
        gc.collect()
