"""What the Channels actor keeps of the node's channels (control state only, pure).

The network loop (chrnode.edge.channel_hub.ChannelHub.status) reports once a second: the open
channels with their members and the counters since the loop started, named by the hub's ``run``.
A restart of the network process starts those counters at 0 again under a new ``run``; the
ledger keeps the totals across restarts (what the old run counted is added to what the new one
counts) and the peak of members seen, so that an operator's view (``chr_channels``,
``network_stats.channels``, ``chr_stat_channel_*``) does not drop with a restart. Malformed
reports are ignored whole (the previous view stays).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["COUNTERS", "ChannelLedger"]

COUNTERS = ("opened_total", "joined_total", "slow_closed", "bytes_delivered")


class ChannelLedger:
    def __init__(self) -> None:
        self._base = dict.fromkeys(COUNTERS, 0)  # totals of earlier network loops
        self._last = dict.fromkeys(COUNTERS, 0)  # the current loop's last report
        self._run: str | None = None
        self.channels: list[dict[str, Any]] = []
        self.members = 0
        self.peak_members = 0
        self.restarts_seen = 0
        self.reported_at = 0.0

    def report(self, status: object, now: float) -> bool:
        """Take one report; False (and nothing changed) if it is not the hub's status shape."""
        if not isinstance(status, Mapping):
            return False
        counts = {name: status.get(name) for name in COUNTERS}
        listed, run = status.get("list"), status.get("run")
        if not all(type(v) is int and v >= 0 for v in counts.values()) or not isinstance(listed, list):
            return False
        values: dict[str, int] = {k: v for k, v in counts.items() if isinstance(v, int)}
        if not isinstance(run, str) or (
            run == self._run and any(values[k] < self._last[k] for k in COUNTERS)
        ):
            return False  # counters of one run never go back
        if run != self._run:
            # A new network loop: what the old one counted is kept.
            self.restarts_seen += self._run is not None
            self._run = run
            for name in COUNTERS:
                self._base[name] += self._last[name]
        self._last = values
        self.channels = [dict(c) for c in listed if isinstance(c, Mapping)]
        self.members = sum(len(c.get("members") or ()) for c in self.channels)
        self.peak_members = max(self.peak_members, self.members)
        self.reported_at = now
        return True

    def totals(self) -> dict[str, int]:
        return {name: self._base[name] + self._last[name] for name in COUNTERS}

    def view(self) -> dict[str, Any]:
        """The published snapshot part "channels" (docs/rpc.md)."""
        return {
            "channels": len(self.channels),
            "members": self.members,
            "peak_members": self.peak_members,
            **self.totals(),
            "reported_at": self.reported_at,
            "list": [dict(c) for c in self.channels],
        }
