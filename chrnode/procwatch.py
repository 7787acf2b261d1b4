"""The daemon's watch over the processes Thespian itself depends on (SPEC 9).

The supervision tree restarts actors, but nothing restarts the tree's own footing: the root
supervisor, Thespian's admin and its logger. If one of them dies every actor goes with it, while
the daemon, which only talks to the admin, would sit idle with the node down. So the daemon:

* becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`): Thespian's admin detaches itself with a
  double fork, and would otherwise be adopted by init; now it is re-parented to the daemon, which
  reaps it (reading how it died) and every orphan of the node (no `<defunct>` process);
* watches the three processes by pid and start time (a reused pid is not mistaken for them), and
  on a death decides with `RebuildBudget` (a pure rule, its own intensity limit) whether to
  rebuild the actor system or give up and exit non-zero.

`SystemWatch` holds no sockets and runs no threads: the daemon calls `poll()` from its loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field

import psutil

log = logging.getLogger("chrnode.daemon")

_PR_SET_CHILD_SUBREAPER = 36

ROOT = "root supervisor"
ADMIN = "Thespian admin"
LOGGER = "Thespian logger"
LOGGER_TITLE = "chr-node: " + LOGGER


def become_subreaper() -> bool:
    """Orphans of this process's descendants are re-parented to it (Linux); False elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return False
    return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0


def describe_status(status: int) -> str:
    """A wait status in words: 'killed by SIGKILL', 'exited with status 1'."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended (wait status {status})"


def reap() -> dict[int, int]:
    """Collect every child that has ended: pid -> wait status (never blocks)."""
    ended: dict[int, int] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended[pid] = status


def live_descendants() -> list[int]:
    """This process's descendants that have not ended (zombies excluded)."""
    out: list[int] = []
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return out
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out.append(int(child.pid))
        except psutil.Error:
            continue
    return out


@dataclass(frozen=True)
class Watched:
    role: str
    pid: int
    create_time: float

    @classmethod
    def of(cls, role: str, pid: int) -> Watched:
        return cls(role, pid, float(psutil.Process(pid).create_time()))

    def end(self, grace: float) -> None:
        """Give it `grace` seconds to exit, then SIGKILL it (if it is still the same process)."""
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def stopped(self) -> bool:
        """SIGSTOPped (state T): alive, but it answers nothing."""
        try:
            return bool(psutil.Process(self.pid).status() == psutil.STATUS_STOPPED)
        except psutil.Error:
            return False

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            same = float(process.create_time()) == self.create_time
            return same and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def find_logger(admin_pid: int) -> int | None:
    """The admin's child that named itself Thespian's logger (chrnode.forkhooks names it)."""
    try:
        children = psutil.Process(admin_pid).children()
    except psutil.Error:
        return None
    for child in children:
        try:
            if " ".join(child.cmdline()).startswith(LOGGER_TITLE):
                return int(child.pid)
        except psutil.Error:
            continue
    return None


@dataclass
class RebuildBudget:
    """At most `max_rebuilds` rebuilds of the actor system within `window` seconds (as OTP's
    restart intensity, one level above the root supervisor); past that the daemon gives up."""

    max_rebuilds: int = 3
    window: float = 60.0
    times: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        """Record a rebuild at `now` if the budget allows it; False means give up."""
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        if len(self.times) >= self.max_rebuilds:
            return False
        self.times.append(now)
        return True


STOPPED_LIMIT = 5.0  # seconds a watched process may stay SIGSTOPped before it counts as dead
_UNKNOWN = "gone (no exit status: its parent was not the daemon)"


@dataclass(frozen=True)
class Death:
    role: str
    pid: int
    how: str


class SystemWatch:
    """The root supervisor, the admin and the logger of one actor system, by pid."""

    def __init__(self, root: Watched, admin: Watched, logger: Watched | None) -> None:
        self.watched = {w.role: w for w in (root, admin, logger) if w is not None}
        self.statuses: dict[int, int] = {}
        self.stopped_since: dict[str, float] = {}

    @classmethod
    def of_root(cls, root_pid: int) -> SystemWatch:
        root = Watched.of(ROOT, root_pid)
        admin_pid = psutil.Process(root_pid).ppid()
        logger_pid = find_logger(admin_pid)
        return cls(root, Watched.of(ADMIN, admin_pid), Watched.of(LOGGER, logger_pid) if logger_pid else None)

    @property
    def pids(self) -> dict[str, int]:
        return {role: w.pid for role, w in self.watched.items()}

    def note_reaped(self, ended: dict[int, int]) -> None:
        self.statuses.update(ended)

    def poll(self) -> list[Death]:
        """Which watched processes are gone since the last poll (and how, when the daemon reaped them)."""
        gone = [w for w in self.watched.values() if not w.alive()]
        if not gone:
            return []
        # One that died just now is a zombie until reaped, and for a moment after SIGKILL not even
        # that: wait up to 0.2 s for the daemon's own children (the admin) to become reapable.
        deadline = time.monotonic() + 0.2
        self.note_reaped(reap())
        while any(w.pid not in self.statuses for w in gone) and time.monotonic() < deadline:
            time.sleep(0.01)
            self.note_reaped(reap())
        deaths = []
        for w in gone:
            status = self.statuses.get(w.pid)
            how = describe_status(status) if status is not None else _UNKNOWN
            deaths.append(Death(w.role, w.pid, f"died: {how}"))
            del self.watched[w.role]
        return deaths

    def stopped(self, now: float, limit: float = STOPPED_LIMIT) -> list[Death]:
        """Processes stopped (SIGSTOP) for `limit` seconds: SIGKILLed and reported as deaths."""
        deaths = []
        for role, w in list(self.watched.items()):
            if not w.stopped():
                self.stopped_since.pop(role, None)
                continue
            since = self.stopped_since.setdefault(role, now)
            if now - since >= limit:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
                del self.watched[role]
                deaths.append(Death(role, w.pid, f"was stopped (SIGSTOP) for {limit:g} s: killed it"))
        return deaths

    def hung(self, seconds: float) -> list[Death]:
        """The root did not answer for `seconds`: SIGKILL it and the admin (a stopped process
        cannot shut down politely), and report it as the death of the root."""
        root = self.watched.pop(ROOT, None)
        for w in (root, self.watched.get(ADMIN)):
            if w is not None and w.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
        how = f"did not answer the daemon's heartbeat for {seconds:g} s (hung): killed it and the admin"
        return [Death(ROOT, root.pid if root is not None else 0, how)]

    def adopt_logger(self) -> int | None:
        """After the logger died: the admin's replacement, if it started one."""
        admin = self.watched.get(ADMIN)
        pid = find_logger(admin.pid) if admin is not None else None
        if pid is None:
            return None
        try:
            self.watched[LOGGER] = Watched.of(LOGGER, pid)
        except psutil.Error:
            return None
        return pid
