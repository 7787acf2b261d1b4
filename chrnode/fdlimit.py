"""Open-file descriptors: the process limit, and surviving running out of them in accept loops.

A flood of connections can use every descriptor a process may open. ``accept()`` then fails with
EMFILE while the listening socket stays readable, so a selector loop that just logs and returns
spins at full speed and logs thousands of tracebacks a second. ``AcceptPause`` is the pure rule an
accept loop follows instead: stop watching the socket, retry after a delay that doubles up to a
second, and log one line when an episode starts and one when it ends (with how many accepts failed).
An episode ends only when an accept works ``quiet`` seconds after the last failure, so a flood
that keeps the table full (one accept in, the next one failing) stays one episode.

``raise_nofile_limit`` is called by the daemon at start (every actor process inherits the limit).
"""

from __future__ import annotations

import errno
import resource
from dataclasses import dataclass

__all__ = ["DESCRIPTOR_ERRORS", "AcceptPause", "nofile_limits", "raise_nofile_limit"]

# Out of descriptors (per process or system-wide) or of kernel memory for the socket: waiting helps.
DESCRIPTOR_ERRORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))

FIRST_PAUSE = 0.05
MAX_PAUSE = 1.0
QUIET = 2 * MAX_PAUSE  # longer than any pause, so failures in a row always share an episode


def nofile_limits() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of this process; RLIM_INFINITY is returned as 2**31 - 1."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    big = 2**31 - 1
    return (big if soft == resource.RLIM_INFINITY else soft, big if hard == resource.RLIM_INFINITY else hard)


def raise_nofile_limit(wanted: int = 0) -> tuple[int, int, int]:
    """Set the soft RLIMIT_NOFILE to ``wanted`` (0: the hard limit), never above the hard limit.

    Returns (old soft, new soft, hard). Raises OSError when the kernel refuses."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted == 0 else wanted
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, target, hard


@dataclass
class AcceptPause:
    """The back-off rule of one accept loop (events in, what to do out; no I/O, ``now`` given).

    pause = AcceptPause()
    delay, starts_episode = pause.failed(now)  # accept() hit EMFILE: stop watching for `delay` s
    ended = pause.succeeded(now)               # accept() worked: (failures, seconds) if an
                                               # episode just ended, else None
    """

    first: float = FIRST_PAUSE
    longest: float = MAX_PAUSE
    quiet: float = QUIET
    failures: int = 0
    episodes: int = 0
    started_at: float = 0.0
    last_failure: float = 0.0
    _delay: float = 0.0

    @property
    def in_episode(self) -> bool:
        return self.failures > 0

    def failed(self, now: float) -> tuple[float, bool]:
        """An accept failed for want of descriptors: the pause before the next try, and whether
        this failure starts an episode (the one that should be logged)."""
        starts = self.failures == 0
        if starts:
            self.episodes += 1
            self.started_at = now
        self._delay = self.first if self._delay == 0.0 else min(self._delay * 2, self.longest)
        self.failures += 1
        self.last_failure = now
        return self._delay, starts

    def succeeded(self, now: float) -> tuple[int, float] | None:
        """An accept worked. Ends the episode if the last failure is ``quiet`` seconds old:
        then (failed accepts, seconds from the first failure to the last), else None."""
        self._delay = 0.0  # the next failure starts short again
        if self.failures == 0 or now - self.last_failure < self.quiet:
            return None
        ended = (self.failures, self.last_failure - self.started_at)
        self.failures = 0
        return ended
