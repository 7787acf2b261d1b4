"""The counts of the chain cache (chrnode.chain.cache) and the report made of them (SPEC 12).

    counts = CacheCounts()
    counts.add("requests"); counts.tally("contracts", "l1_hits")
    counts.copy().report(entries=len(l1), max_entries=1000)

Not locked: TieredCache calls it under its own lock, so a report sees one moment of the cache.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# The counts reported as they are, besides the requests and the hits per tier.
_REPORTED = (
    "merged",
    "stale_served",
    "load_errors",
    "refreshes",
    "refresh_errors",
    "l2_errors",
    "evictions",
    "invalidations",
)


class CacheCounts:
    """Events of a TieredCache, in total and per category."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.by_category: Counter[tuple[str, str]] = Counter()

    def add(self, what: str) -> None:
        """Count an event that belongs to no one category (a request, a merge, an eviction, ...)."""
        self.totals[what] += 1

    def tally(self, category: str, what: str) -> None:
        """Count an event of `category`, in its category and in the totals."""
        self.totals[what] += 1
        self.by_category[(category, what)] += 1

    def copy(self) -> CacheCounts:
        out = CacheCounts()
        out.totals = self.totals.copy()
        out.by_category = self.by_category.copy()
        return out

    def report(self, entries: int, max_entries: int) -> dict[str, Any]:
        """Hit/miss counts per tier and ratios, for `network_stats` and metrics (SPEC 12)."""
        counts = dict(self.totals)
        requests = counts.get("requests", 0)

        def ratio(n: int) -> float:
            return round(n / requests, 4) if requests else 0.0

        tiers = (("l1", "l1_hits"), ("l2", "l2_hits"), ("chain", "loads"))
        hits = {tier: counts.get(name, 0) for tier, name in tiers}
        categories: dict[str, dict[str, int]] = {}
        for (category, what), n in self.by_category.items():
            categories.setdefault(category, {})[what] = n
        out: dict[str, Any] = {
            "requests": requests,
            "entries": entries,
            "max_entries": max_entries,
            "hits": hits,
            "ratios": {tier: ratio(n) for tier, n in hits.items()},
            "hit_ratio": ratio(hits["l1"] + hits["l2"] + counts.get("merged", 0)),
            "categories": categories,
        }
        for name in _REPORTED:
            out[name] = counts.get(name, 0)
        return out
