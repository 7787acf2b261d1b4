"""A device session's deadlines as a pure state machine (SPEC 3, 5): events in, an expiry out.

The session owns one :class:`SessionDeadlines` and feeds it what happens (TLS up, hello accepted,
a ticket accepted, a ticket requested); the server's sweep asks it, now and then, whether a
deadline has passed, with the session's byte counter so that idleness costs nothing per frame.
The answer is an :class:`Expired` (the notify's code, message and level, then close) or None.
No clock, no I/O: the tests drive it with generated times.

The deadlines:

- hello: a connection must prove a device within ``hello_timeout`` of its TLS handshake (SPEC 3);
- idle: an authenticated session with no byte either way for ``idle_timeout`` is closed (``info``);
- ticket: a valid ticket within ``ticket_timeout`` of hello (SPEC 5);
- ticket request: a ticket covering the usage within ``ticket_request_timeout`` of the node's
  ``ticket_request``.

The two ticket deadlines close the session only with ``require_tickets``; without it they lapse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chrnode.edge import codes

__all__ = ["DeadlineRules", "Expired", "SessionDeadlines"]


class DeadlineRules(Protocol):
    """The configured limits, in seconds (the config keys of the same names; Config has them)."""

    @property
    def hello_timeout(self) -> float: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def ticket_timeout(self) -> float: ...
    @property
    def ticket_request_timeout(self) -> float: ...
    @property
    def require_tickets(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Expired:
    """Close the session: notify ``code`` and ``message`` at ``level`` first."""

    code: str
    message: str
    level: str = "error"


class SessionDeadlines:
    """The deadlines of one session. ``hello`` is pending until :meth:`authenticated`."""

    __slots__ = ("_seen", "active_at", "authed", "hello", "request", "rules", "ticket")

    def __init__(self, rules: DeadlineRules) -> None:
        self.rules = rules
        self.authed = False
        self.hello = 0.0
        self.ticket: float | None = None
        self.request: float | None = None
        self.active_at = 0.0
        self._seen = 0  # the byte counter when activity was last noticed

    # ---- events -------------------------------------------------------------------------------

    def connected(self, now: float) -> None:
        """The TLS handshake is done: hello is due within hello_timeout."""
        self.active_at = now
        self.hello = now + self.rules.hello_timeout

    def authenticated(self, now: float) -> None:
        """Hello accepted: a ticket is due within ticket_timeout."""
        self.authed = True
        self.ticket = now + self.rules.ticket_timeout

    def ticket_accepted(self) -> None:
        """A valid ticket: neither ticket deadline runs any longer."""
        self.ticket = None
        self.request = None

    def ticket_wanted(self, now: float) -> bool:
        """Usage passed the grace: True when a ticket_request should go out now (none is pending),
        and its deadline starts."""
        if self.request is not None:
            return False
        self.request = now + self.rules.ticket_request_timeout
        return True

    # ---- checks (the sweep) -------------------------------------------------------------------

    def idle_for(self, now: float, traffic: int) -> float:
        """Seconds since the byte counter last moved (the sweep notices changes, no per-frame cost)."""
        if traffic != self._seen:
            self._seen = traffic
            self.active_at = now
        return now - self.active_at

    def check_presence(self, now: float, traffic: int) -> Expired | None:
        """The hello deadline before authentication, the idle deadline after it."""
        rules = self.rules
        if not self.authed:
            if now > self.hello:
                return Expired(
                    codes.TIMEOUT, f"no hello within {rules.hello_timeout:g} s of the TLS handshake"
                )
            return None
        if self.idle_for(now, traffic) > rules.idle_timeout:
            return Expired(codes.TIMEOUT, f"no traffic for {rules.idle_timeout:g} s; closing", "info")
        return None

    def check_tickets(self, now: float) -> Expired | None:
        """The two ticket deadlines of an authenticated session; a passed one lapses either way."""
        rules = self.rules
        if self.ticket is not None and now > self.ticket:
            self.ticket = None
            if rules.require_tickets:
                return Expired(
                    codes.TICKET_REQUIRED,
                    f"no valid ticket within {rules.ticket_timeout:g} s of hello (SPEC 5)",
                )
        if self.request is not None and now > self.request:
            self.request = None
            if rules.require_tickets:
                return Expired(
                    codes.TICKET_REQUIRED,
                    f"no ticket covering the usage within {rules.ticket_request_timeout:g} s of the request",
                )
        return None
