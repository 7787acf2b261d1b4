"""Following the chain's head (SPEC 7 "a monitor that follows the head block"). Pure logic.

The RemoteChain.Monitor actor polls every endpoint and feeds each answer here:

    monitor = HeadMonitor(endpoints, epoch_length)
    monitor.observe(url, head=123, timestamp=1_700_000_000, latency=0.004)
    monitor.failed(url, "no answer within 5 s")
    monitor.snapshot()   -> {status, head, head_timestamp, lag_blocks, lag_seconds, epoch, endpoints, ...}

Status of the node's view of the chain:
- "down": no endpoint answered at its last poll, or the chain is not configured (`not_configured`
  gives the reason: no endpoints, no contract addresses);
- "lagging": the endpoint the node uses (the first healthy one, as RemoteRpc prefers) is more
  than `max_lag_blocks` behind the best head any endpoint reported, or (when `max_head_age` is
  set) its head block is older than that many seconds;
- "synced" otherwise.
`lag_seconds` is the age of the used head block. A development chain (anvil) mines only on
demand, so an old head is normal there: `max_head_age` is off by default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chrnode.ticket import epoch_of

SYNCED = "synced"
LAGGING = "lagging"
DOWN = "down"


@dataclass
class EndpointHealth:
    url: str
    ok: bool = False
    head: int | None = None
    timestamp: int | None = None
    latency: float | None = None
    error: str = "not polled yet"
    checked_at: float | None = None
    failures: int = 0  # consecutive

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": "up" if self.ok else "down",
            "head": self.head,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 2),
            "error": self.error,
            "checked_at": self.checked_at,
            "failures": self.failures,
        }


class HeadMonitor:
    """Sync status, lag and epoch from successive head observations of each endpoint."""

    def __init__(
        self,
        endpoints: Sequence[str],
        epoch_length: int,
        *,
        max_lag_blocks: int = 3,
        max_head_age: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if epoch_length <= 0:
            raise ValueError(f"epoch_length must be positive, got {epoch_length}")
        self.endpoints = {url: EndpointHealth(url) for url in endpoints}
        self.epoch_length = epoch_length
        self.max_lag_blocks = max_lag_blocks
        self.max_head_age = max_head_age
        self.clock = clock
        self.best_head = -1  # highest head any endpoint has reported
        self.last_error = ""
        self.last_error_at: float | None = None
        self.head_changed_at: float | None = None
        self._last_used_head: int | None = None
        self.chain_id: int | None = None
        self.down_reason = "" if endpoints else "no chain endpoints configured"

    def observe(self, url: str, head: int, timestamp: int, latency: float | None = None) -> None:
        """A successful poll of `url`."""
        if head < 0 or timestamp < 0:
            raise ValueError(f"head {head} and timestamp {timestamp} must not be negative")
        ep = self._endpoint(url)
        now = self.clock()
        ep.ok, ep.head, ep.timestamp, ep.latency = True, head, timestamp, latency
        ep.error, ep.checked_at, ep.failures = "", now, 0
        self.best_head = max(self.best_head, head)
        used = self.used()
        if used is not None and used.head != self._last_used_head:
            self._last_used_head = used.head
            self.head_changed_at = now

    def failed(self, url: str, error: str) -> None:
        """A failed poll of `url` (unreachable, timed out, wrong chain, garbage)."""
        ep = self._endpoint(url)
        now = self.clock()
        ep.ok, ep.error, ep.checked_at, ep.latency = False, error, now, None
        ep.failures += 1
        self.last_error, self.last_error_at = f"{url}: {error}", now

    def not_configured(self, reason: str) -> None:
        self.down_reason = reason

    def used(self) -> EndpointHealth | None:
        """The endpoint whose view the node uses: the first healthy one in configured order."""
        for ep in self.endpoints.values():
            if ep.ok and ep.head is not None:
                return ep
        return None

    @property
    def status(self) -> str:
        used = self.used()
        if self.down_reason or used is None:
            return DOWN
        if self.lag_blocks > self.max_lag_blocks:
            return LAGGING
        if self.max_head_age is not None and (self.lag_seconds or 0.0) > self.max_head_age:
            return LAGGING
        return SYNCED

    @property
    def head(self) -> int | None:
        used = self.used()
        return None if used is None else used.head

    @property
    def head_timestamp(self) -> int | None:
        used = self.used()
        return None if used is None else used.timestamp

    @property
    def lag_blocks(self) -> int:
        head = self.head
        return 0 if head is None else max(0, self.best_head - head)

    @property
    def lag_seconds(self) -> float | None:
        timestamp = self.head_timestamp
        return None if timestamp is None else max(0.0, self.clock() - timestamp)

    @property
    def epoch(self) -> int | None:
        """SPEC 5: floor(head block timestamp / epoch_length)."""
        timestamp = self.head_timestamp
        return None if timestamp is None else epoch_of(timestamp, self.epoch_length)

    def snapshot(self) -> dict[str, Any]:
        """The "chain" part of the node's snapshot (published for chr_node_info / health / metrics)."""
        lag_seconds = self.lag_seconds
        status = self.status
        reason = self.down_reason
        if status == DOWN and not reason:
            reason = self.last_error or "no endpoint has answered yet"
        return {
            "status": status,
            "reason": reason,
            "configured": not self.down_reason,
            # the names chrnode.metrics and chrnode.health read (SPEC 12)
            "reachable": self.used() is not None,
            "synced": status == SYNCED,
            "head_block": self.head,
            "lag_s": None if lag_seconds is None else round(lag_seconds, 3),
            "error": reason,
            "chain_id": self.chain_id,
            "head": self.head,
            "head_timestamp": self.head_timestamp,
            "best_head": None if self.best_head < 0 else self.best_head,
            "lag_blocks": self.lag_blocks,
            "lag_seconds": None if lag_seconds is None else round(lag_seconds, 3),
            "head_changed_at": self.head_changed_at,
            "epoch": self.epoch,
            "epoch_length": self.epoch_length,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "endpoints": [ep.as_json() for ep in self.endpoints.values()],
        }

    def _endpoint(self, url: str) -> EndpointHealth:
        ep = self.endpoints.get(url)
        if ep is None:
            raise ValueError(f"unknown endpoint {url!r}; the monitor follows {', '.join(self.endpoints)}")
        return ep
