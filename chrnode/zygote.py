"""The node's fork server: one idle process that forks every actor (and Thespian's logger).

A forked page stays shared until a process writes to it. A supervisor that forked a child keeps
running, and each of its hot pages it writes after the fork leaves the child alone holding the
original, private (docs/architecture.md, "Memory"). The fork server is forked from the daemon once
the daemon is warm (chrnode.actorsys), before Thespian's admin, and then does nothing but fork:
what it runs between two forks is one accept, one fork and one write.

The protocol, on an abstract unix socket (Linux) known to every process forked from the daemon
after the server started (a module global, inherited): a creator connects, sends a length and a
pickled `multiprocessing` process object, and reads back the child's pid; later, on the same
connection, the child's exit code (`multiprocessing.forkserver`'s encoding, so `Popen.poll` is
the standard library's). The child reads and unpickles the object itself, after the fork, so the
server never touches it. Only processes of the same uid are served (SO_PEERCRED).

What the OS would do for a parent, the server does for each child's creator:

* it reaps the child and then sends its creator SIGCHLD (Thespian finds dead children on SIGCHLD,
  by polling each child's Popen, which then reads the exit code);
* when a creator dies (a pidfd per creator), the server SIGKILLs the children it created: a killed
  supervisor takes its children along, as with PR_SET_PDEATHSIG before. Every child also has
  PR_SET_PDEATHSIG for the server, and the server for the daemon, so a SIGKILLed daemon still
  takes everything with it.

`context()` is the multiprocessing context Thespian's admin gets (chrnode.actorsys injects it);
Thespian passes it on to every actor it starts.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import pickle
import secrets
import selectors
import signal
import socket
import struct
import sys
from multiprocessing import context as mp_context
from multiprocessing import popen_fork, reduction, util
from multiprocessing import process as mp_process
from typing import Any

_SIGNED = struct.Struct("q")  # multiprocessing.forkserver's encoding of a pid or an exit code
_LENGTH = struct.Struct("Q")
TITLE = "fork server"

_address: bytes | None = None  # the server's socket (abstract namespace), inherited by every fork
_server_pid = 0  # in the process that started it
_serving = False  # in the fork server itself


class ZygoteUnavailable(RuntimeError):
    """The fork server could not be started here (not Linux, or no pidfd)."""


def _write_signed(sock: socket.socket, value: int) -> None:
    sock.sendall(_SIGNED.pack(value))


def _read_signed(fd: int) -> int:
    data = b""
    while len(data) < _SIGNED.size:
        chunk = os.read(fd, _SIGNED.size - len(data))
        if not chunk:
            raise EOFError("the fork server closed the connection")
        data += chunk
    return int(_SIGNED.unpack(data)[0])


class Popen(popen_fork.Popen):
    """A child asked of the fork server (its `poll` is multiprocessing.popen_forkserver's)."""

    method = "chr-zygote"

    def __init__(self, process_obj: Any) -> None:
        self._sock: socket.socket | None = None
        super().__init__(process_obj)

    def duplicate_for_child(self, fd: int) -> int:  # pragma: no cover - nothing here passes fds
        raise ValueError("the fork server does not pass descriptors")

    def _launch(self, process_obj: Any) -> None:
        if _address is None:
            raise ZygoteUnavailable("no fork server in this process's ancestry")
        buf = io.BytesIO()
        mp_context.set_spawning_popen(self)  # type: ignore[arg-type]
        try:
            reduction.dump(process_obj, buf)
        finally:
            mp_context.set_spawning_popen(None)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(_address)
            data = buf.getbuffer()
            sock.sendall(_LENGTH.pack(len(data)))
            sock.sendall(data)
            self.sentinel = sock.fileno()
            self.pid = _read_signed(self.sentinel)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.finalizer = util.Finalize(self, sock.close)

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        if self.returncode is None:
            from multiprocessing.connection import wait

            if not wait([self.sentinel], 0 if flag == os.WNOHANG else None):
                return None
            try:
                self.returncode = _read_signed(self.sentinel)
            except (OSError, EOFError):  # the fork server died
                self.returncode = 255
        return self.returncode


class Process(mp_process.BaseProcess):
    _start_method = None

    @staticmethod
    def _Popen(process_obj: Any) -> Popen:
        return Popen(process_obj)


class ZygoteContext(mp_context.BaseContext):
    _name = "chr-zygote"
    Process = Process

    def get_start_method(self, allow_none: bool = False) -> str:
        return self._name

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (context, ())


_CONTEXT = ZygoteContext()


def context() -> ZygoteContext:
    return _CONTEXT


def running() -> bool:
    return _address is not None


def start() -> int:
    """Fork the fork server from this (warm) process; returns its pid once it listens."""
    global _address, _server_pid
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        raise ZygoteUnavailable("the fork server needs Linux pidfds")
    stop()
    address = b"\0chr-node-zygote-" + secrets.token_hex(8).encode()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the fork server
        code = 1
        try:
            os.close(ready_r)
            code = _serve(address, ready_w)
        except BaseException:
            with contextlib.suppress(Exception):
                sys.excepthook(*sys.exc_info())
        finally:
            os._exit(code)
    os.close(ready_w)
    try:
        ok = os.read(ready_r, 1) == b"1"
    finally:
        os.close(ready_r)
    if not ok:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise ZygoteUnavailable("the fork server did not start")
    _address, _server_pid = address, pid
    return pid


def stop() -> None:
    """SIGKILL the fork server this process started (its children die with it) and reap it."""
    global _address, _server_pid
    pid, _server_pid, _address = _server_pid, 0, None
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def server_pid() -> int:
    return _server_pid


def serving() -> bool:
    return _serving


def start_child(*args: Any) -> Any:
    """Thespian's `startChild`, in its place (`patch_thespian`). Thespian passes a child the
    descriptors of its creator's transport to close; a child of the fork server did not inherit
    them, and the same numbers are other descriptors in it: it closes none."""
    if len(args) == 15 and isinstance(args[13], ZygoteContext):
        args = (*args[:12], [], *args[13:])
    return _original_start_child(*args)


_original_start_child: Any = None


def patch_thespian() -> None:
    global _original_start_child
    from thespian.system import multiprocCommon

    if _original_start_child is None:
        _original_start_child = multiprocCommon.startChild
        multiprocCommon.startChild = start_child


# --- in the fork server -------------------------------------------------------------------------


class _Creator:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.children: set[int] = set()
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self.pidfd = None  # already gone

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _serve(address: bytes, ready_w: int) -> int:
    global _serving, _address
    from chrnode import forkhooks

    _serving, _address = True, address  # every child asks this server for its own children
    forkhooks.set_title(TITLE)
    # Nothing here is collected while it serves: freeze what it inherited once (every child then
    # inherits it frozen) and never collect, so the server writes to none of those pages.
    gc.freeze()
    gc.disable()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_r, False)
    os.set_blocking(sig_w, False)
    old_handlers = {
        signal.SIGCHLD: signal.signal(signal.SIGCHLD, lambda *_: None),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
    }
    signal.set_wakeup_fd(sig_w)
    selector = selectors.EpollSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sig_r, selectors.EVENT_READ, "sigchld")
    children: dict[int, tuple[socket.socket, _Creator | None]] = {}
    creators: dict[int, _Creator] = {}  # by pid
    by_pidfd: dict[int, _Creator] = {}
    os.write(ready_w, b"1")
    os.close(ready_w)
    uid = os.getuid()

    def own_fds() -> list[int]:
        fds = [listener.fileno(), selector.fileno(), sig_r, sig_w]
        fds += [conn.fileno() for conn, _ in children.values()]
        fds += list(by_pidfd)
        return fds

    while True:
        for key, _events in selector.select():
            if key.data == "accept":
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                peer_pid, peer_uid, _gid = struct.unpack("3i", creds)
                if peer_uid != uid:
                    conn.close()
                    continue
                creator = creators.get(peer_pid)
                if creator is None:
                    creator = _Creator(peer_pid)
                    if creator.pidfd is not None:
                        creators[peer_pid] = creator
                        by_pidfd[creator.pidfd] = creator
                        selector.register(creator.pidfd, selectors.EVENT_READ, creator)
                child_fds = [fd for fd in own_fds() if fd != conn.fileno()]
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        gc.enable()  # a child collects its own objects (not the frozen ones)
                        signal.set_wakeup_fd(-1)
                        for sig, handler in old_handlers.items():
                            signal.signal(sig, handler)
                        for fd in child_fds:
                            with contextlib.suppress(OSError):
                                os.close(fd)
                        code = _run_child(conn)
                    except BaseException:
                        with contextlib.suppress(Exception):
                            sys.excepthook(*sys.exc_info())
                            sys.stderr.flush()
                    finally:
                        os._exit(code)
                try:
                    _write_signed(conn, pid)
                except OSError:
                    pass  # the creator is gone: its pidfd kills the child
                children[pid] = (conn, creator if creator.pidfd is not None else None)
                if creator.pidfd is None:
                    os.kill(pid, signal.SIGKILL)
                else:
                    creator.children.add(pid)
            elif key.data == "sigchld":
                with contextlib.suppress(BlockingIOError):
                    while os.read(sig_r, 4096):
                        pass
                _reap(children)
            else:
                creator = key.data
                # The creator died: its children go with it (what PR_SET_PDEATHSIG did when the
                # creator was their parent).
                for pid in creator.children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                selector.unregister(key.fileobj)
                by_pidfd.pop(creator.pidfd, None)
                creators.pop(creator.pid, None)
                for pid in creator.children:
                    if pid in children:
                        children[pid] = (children[pid][0], None)
                creator.close()


def _reap(children: dict[int, tuple[socket.socket, _Creator | None]]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        entry = children.pop(pid, None)
        if entry is None:
            continue
        conn, creator = entry
        with contextlib.suppress(OSError):
            _write_signed(conn, os.waitstatus_to_exitcode(status))
        conn.close()
        if creator is not None:
            creator.children.discard(pid)
            if creator.pidfd is not None:
                # The creator is told as a parent would be (Thespian polls its children on SIGCHLD).
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(creator.pidfd, signal.SIGCHLD)


def _run_child(conn: socket.socket) -> int:
    """In a new child: read the process object its creator sent, and run it."""
    with conn.makefile("rb") as stream:
        (length,) = _LENGTH.unpack(stream.read(_LENGTH.size))
        data = stream.read(length)
    conn.close()
    current: Any = mp_process.current_process()
    current._inheriting = True
    try:
        process_obj = pickle.loads(data)
    finally:
        del current._inheriting
    del data
    return int(process_obj._bootstrap())
