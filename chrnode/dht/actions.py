"""The node machine's settings and the actions it returns (chrnode.dht.node, SPEC 6)."""

from __future__ import annotations

from dataclasses import dataclass

from chrnode.dht.ids import ALPHA, Contact, K
from chrnode.dht.lookup import LookupResult
from chrnode.dht.messages import Request

__all__ = ["Action", "DhtConfig", "LookupDone", "Published", "Send"]


@dataclass(frozen=True)
class DhtConfig:
    k: int = K
    alpha: int = ALPHA
    hard_timeout: float = 5.0  # a request unanswered this long failed
    rtt_initial: float = 1.0  # soft timeout before any round trip was measured (RFC 6298)
    rtt_floor: float = 0.05
    abandon_factor: float = 3.0  # a query unanswered this many soft timeouts no longer holds a lookup
    max_failures: int = 5  # failures in a row that evict a contact with no replacement waiting
    fresh_for: float = 60.0  # a contact heard from this recently is not probed before eviction
    refresh_interval: float = 3600.0
    republish_interval: float = 3600.0
    maintenance_period: float = 60.0
    cache_found_values: bool = True  # FIND_VALUE stores the value at the closest node without it
    store_capacity: int = 100_000
    refresh_on_join: bool = True  # a join also looks up one id in every bucket past the nearest
    refreshes_in_flight: int = 3  # of a join's refreshes, at most this many run at once
    rejoin_initial: float = 2.0  # the table emptied: first join through the fleet again after this
    rejoin_max: float = 300.0  # the backoff between failed rejoins doubles up to this


@dataclass(frozen=True)
class Send:
    request_id: int
    to: Contact
    request: Request


@dataclass(frozen=True)
class LookupDone:
    lookup_id: int
    purpose: str  # "lookup", "join", "rejoin", "refresh", "publish", "republish"
    result: LookupResult


@dataclass(frozen=True)
class Published:
    key: bytes
    sent_to: list[Contact]


Action = Send | LookupDone | Published
