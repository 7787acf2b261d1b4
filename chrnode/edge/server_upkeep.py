"""The device port server's upkeep, a mixin of `EdgeServer` (chrnode.edge.server): the work it
does on its own clock and the figures it reports.

One sweep task enforces every deadline (hello, idle, tickets; admission's handshake deadline) by
scanning the sessions, so an idle connection costs no timer; it also refreshes the epoch and now
and then prunes the rate buckets and the accounts of devices gone. The report loop hands
``snapshot()`` (connections, devices, ports, bytes, errors by code) to ``hooks.report``.

`EdgeServer` sets the attributes declared on `ServerUpkeep` in its `__init__` and provides
``loop``, ``bound_ports``, ``_cut`` and ``_log_pressure``: the listeners, the sessions and
admission stay in chrnode.edge.server, which imports this module, never the other way round.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from chrnode.config import Config
from chrnode.edge import codes
from chrnode.edge.admission import Admission
from chrnode.edge.channel_hub import ChannelHub
from chrnode.edge.hooks import EdgeHooks
from chrnode.edge.ports import PortTable
from chrnode.edge.ratelimit import KeyedBuckets
from chrnode.edge.session import Session
from chrnode.edge.tlslisten import TlsListener
from chrnode.edge.usage import DeviceAccount

__all__ = ["ServerUpkeep"]

_log = logging.getLogger("chrnode.edge")

REPORT_INTERVAL = 10.0  # seconds between hooks.report calls
EPOCH_REFRESH = 10.0  # seconds between hooks.current_epoch calls


class ServerUpkeep:
    """The upkeep half of `EdgeServer`; the server's `__init__` sets every attribute declared here."""

    config: Config
    hooks: EdgeHooks
    epoch: int
    ports: PortTable
    channels: ChannelHub
    sessions: set[Session]
    devices: dict[bytes, Session]
    accounts: dict[bytes, DeviceAccount]
    errors: Counter[str]
    tickets_accepted: int
    admission: Admission[Session]
    _conn_buckets: KeyedBuckets
    _notice_buckets: KeyedBuckets
    _listeners: list[TlsListener]
    _closed_bytes_in: int
    _closed_bytes_out: int

    # -- what EdgeServer provides (its loop, listeners and admission, chrnode.edge.server) -------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        raise NotImplementedError

    @property
    def bound_ports(self) -> list[int]:
        raise NotImplementedError

    def _cut(self, session: Session, code: str, message: str) -> None:
        """Close a connection admission gave up on: in its TLS handshake, or waiting for hello."""
        raise NotImplementedError

    def _log_pressure(self) -> None:
        """One line a minute at most, with counts, however hard the node is pushed."""
        raise NotImplementedError

    # ---- timers -----------------------------------------------------------------------------

    def _tick(self) -> float:
        config = self.config
        shortest = min(
            config.hello_timeout,
            config.idle_timeout,
            config.ticket_timeout,
            config.ticket_request_timeout,
            config.handshake_deadline,
        )
        return min(1.0, max(0.02, shortest / 4))

    async def _sweep(self) -> None:
        next_epoch = 0.0
        next_prune = 0.0
        while True:
            await asyncio.sleep(self._tick())
            now = self.loop.time()
            expired = self.admission.tick(now)
            for session in expired:
                deadline = self.config.handshake_deadline
                self._cut(session, codes.TIMEOUT, f"no accepted hello within {deadline:g} s of connecting")
            self._log_pressure()
            if now >= next_epoch:
                next_epoch = now + EPOCH_REFRESH
                await self._refresh_epoch()
            for session in list(self.sessions):
                if not session.closed:
                    try:
                        session.tick(now)
                    except Exception:
                        _log.exception("sweep of %s failed", session.label())
            if now >= next_prune:
                next_prune = now + 60.0
                self._prune()

    async def _refresh_epoch(self) -> None:
        try:
            epoch = await self.hooks.current_epoch()
        except Exception as exc:
            _log.warning("cannot read the current epoch (keeping %d): %s", self.epoch, exc)
            return
        if epoch != self.epoch:
            for session in self.sessions:
                session.flush_usage(self.epoch)  # the old epoch's bytes go to the old epoch
            self.epoch = epoch

    def _prune(self) -> None:
        self._conn_buckets.prune()
        self._notice_buckets.prune()
        for device in [d for d in self.accounts if d not in self.devices]:
            account = self.accounts[device]
            account.forget_before(self.epoch - 1)
            if account.idle():
                del self.accounts[device]

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            try:
                await self.hooks.report(self.snapshot())
            except Exception:
                _log.exception("edge report failed")

    # ---- reports ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Counters for stats and the JSON-RPC API (plain types only).

        Safe to call from another thread (the actor's): it only copies containers in one C call
        each and reads integers, so at worst a figure is one event old."""
        sessions = list(self.sessions)
        live_in = sum(s.conn.bytes_in for s in sessions if s.conn is not None)
        live_out = sum(s.conn.bytes_out for s in sessions if s.conn is not None)
        return {
            "connections": len(sessions),
            "handshaking": sum(listener.handshaking for listener in self._listeners),
            "devices": len(self.devices),
            "ports_open": self.ports.count,
            "ports_opened_total": self.ports.opened_total,
            "channels": self.channels.status(listed=False),
            "bytes_in": self._closed_bytes_in + live_in,
            "bytes_out": self._closed_bytes_out + live_out,
            "accepted_total": sum(listener.accepted for listener in self._listeners),
            "refused_total": sum(listener.refused for listener in self._listeners),
            "handshakes_failed": sum(listener.handshakes_failed for listener in self._listeners),
            "tickets_accepted": self.tickets_accepted,
            "admission": self.admission.counters(),
            "errors": dict(self.errors),
            "epoch": self.epoch,
            "listening": self.bound_ports,
        }
