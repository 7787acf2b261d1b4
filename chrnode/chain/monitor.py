"""Following the chain's head (SPEC 7 "a monitor that follows the head block"). Pure logic.

The RemoteChain.Monitor actor polls every endpoint and feeds each answer here:

    monitor = HeadMonitor(endpoints, epoch_length)
    monitor.observe(url, head=123, timestamp=1_700_000_000, latency=0.004)
    monitor.failed(url, "no answer within 5 s", retry_in=4.0)
    monitor.backing_off(url, retry_in=2.0)      # not probed this time: its backoff is not over
    monitor.balance(wei=..., gas_price=..., error="")
    monitor.snapshot()   -> {status, head, head_timestamp, lag_blocks, lag_seconds, epoch, endpoints, ...}

Each endpoint's `state` (issue 7: an operator sees failover): "active" (answers, and is the one
the node uses), "standby" (answers, another is used), "failing" (its last probe failed),
"backing_off" (failed, and not probed again for `retry_in_s`), "unknown" (not probed yet).
`node_balance` is the node account's balance and whether it can pay for one ticket batch
(`can_pay`: balance >= gas price x SUBMIT_GAS), for `status`, health and /metrics.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chrnode.ticket import epoch_of

SYNCED = "synced"
LAGGING = "lagging"
DOWN = "down"
ACTIVE, STANDBY, FAILING, BACKING_OFF, UNKNOWN = "active", "standby", "failing", "backing_off", "unknown"
# The gas a full submitTickets batch reserves: 64 tickets of distinct devices used 4.16 M gas on
# anvil (measured here), times the 1.25 estimate margin of chrnode.chain.tx, rounded up.
SUBMIT_GAS = 5_500_000


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
    retry_at: float | None = None  # on the monitor's clock: not probed before this

    def state(self, used: bool, now: float) -> str:
        if self.ok:
            return ACTIVE if used else STANDBY
        if self.checked_at is None:
            return UNKNOWN
        return BACKING_OFF if self.retry_at is not None and self.retry_at > now else FAILING

    def as_json(self, used: bool = False, now: float = 0.0) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": "up" if self.ok else "down",
            "state": self.state(used, now),
            "head": self.head,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 2),
            "error": self.error,
            "checked_at": self.checked_at,
            "failures": self.failures,
            "retry_in_s": None
            if self.ok or self.retry_at is None
            else round(max(0.0, self.retry_at - now), 3),
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
        self.node_balance: dict[str, Any] = {"known": False, "error": "not read yet"}
        self.events = {"seen": 0, "invalidated": 0, "last_block": None, "error": ""}

    def observe(self, url: str, head: int, timestamp: int, latency: float | None = None) -> None:
        """A successful poll of `url`."""
        if head < 0 or timestamp < 0:
            raise ValueError(f"head {head} and timestamp {timestamp} must not be negative")
        ep = self._endpoint(url)
        now = self.clock()
        ep.ok, ep.head, ep.timestamp, ep.latency = True, head, timestamp, latency
        ep.error, ep.checked_at, ep.failures, ep.retry_at = "", now, 0, None
        self.best_head = max(self.best_head, head)
        used = self.used()
        if used is not None and used.head != self._last_used_head:
            self._last_used_head = used.head
            self.head_changed_at = now

    def failed(self, url: str, error: str, retry_in: float | None = None) -> None:
        """A failed poll of `url` (unreachable, timed out, wrong chain, garbage); it is probed
        again after `retry_in` seconds (its client's backoff), when given."""
        ep = self._endpoint(url)
        now = self.clock()
        ep.ok, ep.error, ep.checked_at, ep.latency = False, error, now, None
        ep.failures += 1
        ep.retry_at = None if retry_in is None else now + retry_in
        self.last_error, self.last_error_at = f"{url}: {error}", now

    def backing_off(self, url: str, retry_in: float) -> None:
        """`url` was not probed this time: it failed before and its backoff is not over."""
        ep = self._endpoint(url)
        ep.ok = False
        ep.retry_at = self.clock() + retry_in

    def balance(self, wei: int | None, gas_price: int | None = None, error: str = "") -> None:
        """The node account's balance (None with `error` when it could not be read)."""
        if wei is None:
            self.node_balance = {"known": False, "error": error or "not read"}
            return
        needed = None if gas_price is None else gas_price * SUBMIT_GAS
        self.node_balance = {
            "known": True,
            "wei": str(wei),  # a decimal string: wei exceed JSON's safe integers
            "eth": wei / 10**18,
            "gas_price_wei": None if gas_price is None else str(gas_price),
            "needed_wei": None if needed is None else str(needed),
            "can_pay": needed is not None and wei >= needed,
            "checked_at": self.clock(),
            "error": "",
        }

    def watched(self, seen: int, invalidated: int, last_block: int | None, error: str = "") -> None:
        """The Fleet/BNS event watch (chrnode.chain.watch): `seen` events so far, `invalidated`
        more cache keys dropped, blocks read up to `last_block`; or the error of a failed read."""
        self.events["seen"] = seen
        self.events["invalidated"] = int(self.events["invalidated"] or 0) + invalidated
        if last_block is not None:
            self.events["last_block"] = last_block
        self.events["error"] = error

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
            "endpoints": self._endpoints_json(),
            "node_balance": dict(self.node_balance),
            "events": dict(self.events),
        }

    def _endpoints_json(self) -> list[dict[str, Any]]:
        used, now = self.used(), self.clock()
        return [ep.as_json(ep is used, now) for ep in self.endpoints.values()]

    def _endpoint(self, url: str) -> EndpointHealth:
        ep = self.endpoints.get(url)
        if ep is None:
            raise ValueError(f"unknown endpoint {url!r}; the monitor follows {', '.join(self.endpoints)}")
        return ep


def endpoint_rows(chain: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each endpoint of a "chain" snapshot as network_stats and /metrics show it (any input)."""
    rows = chain.get("endpoints")
    out = []
    for ep in rows if isinstance(rows, list) else []:
        if isinstance(ep, Mapping) and isinstance(ep.get("url"), str):
            out.append(
                {
                    "url": ep["url"],
                    "state": str(ep.get("state") or ("active" if ep.get("status") == "up" else "failing")),
                    "latency_ms": _number(ep.get("latency_ms")),
                    "failures": int(_number(ep.get("failures")) or 0),
                    "retry_in_s": _number(ep.get("retry_in_s")),
                    "error": str(ep.get("error") or ""),
                }
            )
    return out


def balance_summary(chain: Mapping[str, Any]) -> dict[str, Any]:
    """The node account's balance of a "chain" snapshot: {known, eth, can_pay}."""
    balance = chain.get("node_balance")
    if not isinstance(balance, Mapping) or not balance.get("known"):
        return {"known": False}
    return {"known": True, "eth": _number(balance.get("eth")), "can_pay": bool(balance.get("can_pay"))}


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
