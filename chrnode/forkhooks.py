"""What each process of the node does about itself: its name, and the sockets it did not open.

* Every process names itself (`ps`, `top`: `chr-node: Model.Sql.Worker`, `chr-node: Thespian
  admin`), through setproctitle; Thespian's own `setProcName` is redirected here so its admin and
  logger get names of the same form.
  setproctitle is imported in the daemon before the first fork (`prepare_titles`).
* A forked process holds only the sockets it owns: right after a fork, every inherited listening
  socket is replaced by /dev/null. Thespian closes its parent's transport sockets in actors but not
  in its admin, so the daemon's own listening socket used to reach every process. The one
  exception is the node's public ports, which the daemon binds once and every process keeps, so
  that a restarting listener takes its port back instead of racing for it (chrnode.held_ports).
  The descriptor is overwritten rather than closed so that its number stays taken until the
  parent's (now inert) socket object is collected; a closed number could be reused and then
  closed by that object's finaliser.
* `warm_abc_caches()`: an `isinstance` check against an abstract base class (collections.abc's
  Mapping, say: `logging.LogRecord` makes one per record) for a type it has not seen walks every
  registered and derived class of that ABC and writes to their caches; run in the daemon before
  the first fork for the common types, the answers are inherited instead of being found (and the
  pages of a few hundred classes copied, 0.4 MiB) again in every process.
* Thespian 4.0.1's admin restarts a dead logger with `self.logDefs`, which it never set (it keeps
  `self.logdefs`), so killing the logger crashed the admin and with it the node; the alias below
  lets the admin start a new logger.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from typing import Any

TITLE_PREFIX = "chr-node: "
_THESPIAN_ROLES = {"logger": "Thespian logger", "MultiProcAdmin": "Thespian admin"}


def set_title(name: str) -> None:
    """Name this process `chr-node: <name>` for ps and top (argv and the kernel's comm)."""
    try:
        from setproctitle import setproctitle, setthreadtitle
    except ImportError:  # optional at run time: the node works unnamed
        return
    setproctitle(TITLE_PREFIX + name)
    setthreadtitle(name[:15])  # the kernel's comm (top's default view) holds 15 bytes


def prepare_titles() -> None:
    """In the daemon, before the first fork: import setproctitle, so that no process imports it for
    itself (an import after a fork costs about 1 MiB of private memory in that process; Thespian's
    admin, the first to name itself, did, and the processes forked from it inherited it)."""
    with contextlib.suppress(ImportError):
        import setproctitle  # noqa: F401


def _thespian_set_proc_name(name: str, actor_address: Any) -> None:
    set_title(_THESPIAN_ROLES.get(name, name))


def patch_thespian() -> None:
    """Name Thespian's processes our way; let its admin restart a dead logger (see above)."""
    from thespian.system import logdirector, multiprocCommon

    multiprocCommon.setProcName = _thespian_set_proc_name
    logdirector.setProcName = _thespian_set_proc_name
    admin = multiprocCommon.MultiProcAdmin
    if not hasattr(admin, "logDefs"):
        admin.logDefs = property(lambda self: self.logdefs)


def warm_abc_caches(extra: tuple[type, ...] = ()) -> int:
    """Fill the positive and negative caches of collections.abc's and numbers' ABCs for the builtin
    types (and `extra`): `isinstance(value, Mapping)` then answers from the cache. Returns how many
    checks ran."""
    import collections.abc
    import numbers

    abcs = [getattr(collections.abc, name) for name in collections.abc.__all__]
    abcs += [numbers.Number, numbers.Complex, numbers.Real, numbers.Rational, numbers.Integral]
    samples: list[Any] = [1, True, 1.0, 1j, "", b"", bytearray(), memoryview(b""), (), [], {}, set()]
    samples += [frozenset(), None, object(), range(0), {}.keys(), {}.values(), {}.items(), iter(())]
    types = [type(v) for v in samples] + list(extra)
    checks = 0
    for abc in abcs:
        for kind in types:
            issubclass(kind, abc)
            checks += 1
    return checks


def _inherited_fds() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: the usual range
        return list(range(3, 1024))


def listening_fds() -> list[int]:
    """The descriptors of this process that are listening sockets (it only looks)."""
    return [fd for fd in _inherited_fds() if fd > 2 and _is_listening_socket(fd)]


def close_inherited_listeners(keep: frozenset[int] = frozenset()) -> int:
    """Replace every listening socket this process holds by /dev/null, but those in `keep` (the
    node's public ports the daemon holds for its listeners, chrnode.held_ports); returns how many."""
    listening = [fd for fd in listening_fds() if fd not in keep]
    if not listening:
        return 0
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in listening:
            os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    return len(listening)


def _is_listening_socket(fd: int) -> bool:
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        probe = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        return bool(probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.detach()
