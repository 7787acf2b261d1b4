"""What the chain cache (chrnode.chain.cache) is told and what it answers: its per-category
policies and the hits it returns.

    CATEGORIES["tickets"]  # CachePolicy(ttl=3600.0, refresh_ahead=0.1, stale_for=86400.0)
    Hit(value, "l2", stale=False)

- `CachePolicy`: how long a category's entries are fresh, the fraction of the TTL at its end in
  which a hit reloads the entry in the background, and how long past its TTL an entry may be
  served while the chain is unavailable.
- `CATEGORIES`: the policies of the node's categories (SPEC 7, the seed's figures).
- `Hit`: a value with the tier (`Tier`, one of `TIERS`) that answered and whether it is stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Tier = Literal["l1", "l2", "chain"]
TIERS: tuple[Tier, ...] = ("l1", "l2", "chain")


@dataclass(frozen=True)
class CachePolicy:
    """How long a category's entries are fresh, when they refresh, how long they may serve stale."""

    ttl: float
    refresh_ahead: float = 0.0  # fraction of the TTL, at its end, in which a hit triggers a reload
    stale_for: float = 24 * 3600.0  # served past expiry only while the chain is unavailable

    def __post_init__(self) -> None:
        if self.ttl <= 0 or not 0 <= self.refresh_ahead < 1 or self.stale_for < 0:
            raise ValueError(f"bad cache policy {self}: ttl > 0, 0 <= refresh_ahead < 1, stale_for >= 0")


# SPEC 7 / seed: peer info 5 min, blocks 1 min, contracts 5 min, network statistics 30 s, ticket
# validation 1 h with background refresh. "immutable" is ours: mined receipts and reads at a fixed
# block number cannot change (reorgs aside), so a day is safe.
CATEGORIES: Mapping[str, CachePolicy] = {
    "peer": CachePolicy(300.0),
    "blocks": CachePolicy(60.0),
    "contracts": CachePolicy(300.0),
    "stats": CachePolicy(30.0),
    "tickets": CachePolicy(3600.0, refresh_ahead=0.1),
    "immutable": CachePolicy(24 * 3600.0),
}


@dataclass(frozen=True)
class Hit:
    """A cached or loaded value, where it came from, and whether it is past its TTL."""

    value: Any
    tier: Tier
    stale: bool = False
