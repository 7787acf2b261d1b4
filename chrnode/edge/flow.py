"""Per-port backpressure of a port end that owns a connection (SPEC 4), below the session.

As a reader: when the end's connection cannot take more, each port whose data is still arriving
for it is paused at its source (``source.pause_port``) and resumed once the connection drains.
As a source: a paused port is announced with ``port_pause {ref}`` (``port_resume {ref}`` later);
an end whose device goes on sending on a paused port for more than PAUSE_ALLOWANCE bytes (one that
ignores the message) has its whole connection paused until the port resumes, so no reader is ever
flooded. Connection-level pauses are counted, so the reasons (rate limit, ignored pauses) stack.

Subclasses give ``conn``, ``closed`` and ``send``.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, cast

from chrnode.edge.messages import Message, PortPause, PortResume
from chrnode.edge.ports import Port, PortEnd
from chrnode.edge.reader import FrameReader

if TYPE_CHECKING:
    from chrnode.edge.tlsconn import TlsConnection

__all__ = ["PAUSE_ALLOWANCE", "PortFlow"]

PAUSE_ALLOWANCE = 8 * 1024 * 1024  # bytes still accepted on a paused port: what TCP and TLS hold in flight


class PortFlow(FrameReader):
    """Port bookkeeping and pause state of one connection's port end."""

    __slots__ = ("_blocked", "_forced", "_held", "_pauses", "ports", "recent_refs")

    conn: TlsConnection | None
    closed: bool

    def __init__(self, max_frame_size: int, recent_refs: int) -> None:
        super().__init__(max_frame_size)
        self.ports: dict[int, Port] = {}
        self.recent_refs: collections.deque[int] = collections.deque(maxlen=recent_refs)
        self._pauses = 0
        self._blocked: set[Port] | None = None  # ports paused at their source because of this reader
        # Made on first use: most connections never see a pause (an idle connection costs no dict).
        self._held: dict[int, int] | None = (
            None  # ref -> bytes received since the device was asked to pause it
        )
        self._forced: set[int] | None = None  # paused refs it ignored: the connection is paused for them

    def send(self, msg: Message) -> None:
        raise NotImplementedError

    # ---- this end as the reader --------------------------------------------------------------

    def block(self, port: Port, source: PortEnd) -> None:
        """This end cannot keep up with ``port``: pause it at ``source`` (once)."""
        blocked = self._blocked
        if blocked is None:
            blocked = self._blocked = set()
        if port not in blocked:
            blocked.add(port)
            source.pause_port(port)

    def release_blocked(self) -> None:
        blocked, self._blocked = self._blocked, None
        me = cast("PortEnd", self)  # the subclass (a session) is the port end
        for port in blocked or ():
            source = port.other(me)
            if not source.closed:
                source.resume_port(port)

    # ---- this end as the source ----------------------------------------------------------------

    def pause_port(self, port: Port) -> None:
        held = self._held
        if held is None:
            held = self._held = {}
        if port.ref in held or self.closed:
            return
        held[port.ref] = 0
        self.send(PortPause(ref=port.ref))

    def resume_port(self, port: Port) -> None:
        if self._held is None or self._held.pop(port.ref, None) is None:
            return
        if port.ref in self.ports:
            self.send(PortResume(ref=port.ref))
        self._unforce(port.ref)

    def port_closed(self, port: Port) -> None:
        if self._blocked is not None:
            self._blocked.discard(port)
        if self._held is not None:
            self._held.pop(port.ref, None)
        self._unforce(port.ref)

    def paused_refs(self) -> frozenset[int]:
        """Refs this end's device was asked to pause (port_pause) and not resumed yet."""
        return frozenset(self._held or ())

    def sent_while_paused(self, ref: int, nbytes: int) -> None:
        """Count data on a port this device was asked to pause; past the allowance it is not
        honouring port_pause, so its whole connection waits for the port to resume."""
        pauses = self._held
        held = pauses.get(ref) if pauses else None
        if pauses is None or held is None:
            return
        held += nbytes
        pauses[ref] = held
        if held > PAUSE_ALLOWANCE and (self._forced is None or ref not in self._forced):
            if self._forced is None:
                self._forced = set()
            self._forced.add(ref)
            self.pause()

    def _unforce(self, ref: int) -> None:
        if self._forced is not None and ref in self._forced:
            self._forced.discard(ref)
            self.resume()

    # ---- the connection as a whole (counted: rate limits and ignored pauses stack) ------------

    def pause(self) -> None:
        self._pauses += 1
        if self._pauses == 1 and self.conn is not None:
            self.conn.pause_reading()

    def resume(self) -> None:
        if self._pauses == 0:
            return
        self._pauses -= 1
        if self._pauses == 0 and self.conn is not None and not self.closed:
            self.conn.resume_reading()
