"""The chain cache tiers (SPEC 7, seed "Multi-Tier Caching System"): L1 memory, L2 SQLite, L3 the chain.

    cache = TieredCache(config.cache_size, store=ReaderStore(reader, write))
    hit = cache.fetch("contracts", "fleet:0x..:node:0x..", lambda: fleet.node_allowed(node))
    hit.value, hit.tier ("l1" | "l2" | "chain"), hit.stale

- L1 is an LRU of at most `max_entries` entries in this process; L2 is the `cache_l2` table,
  read directly (a read-only connection) and written through a callback, because every write
  goes to the single writer actor (SPEC 10); L3 is the loader the caller gives, a chain call.
- Every category has a TTL (`CATEGORIES`, the seed's figures). "tickets" refreshes ahead: a hit
  in the last `refresh_ahead` fraction of the TTL reloads the entry in the background, so a busy
  entry never expires under its users.
- Identical requests in flight are merged: one loader call, every waiter gets its result.
- When the loader raises `ChainUnavailable`, an expired entry of the same key that is at most
  `stale_for` seconds past its TTL is served instead, marked `stale`; without one the error
  propagates. Nothing waits without a bound: loaders are bounded by RemoteRpc's timeouts and
  waiters by `wait_timeout`.

Values are stored in their msgpack form (tuples come back as lists, whichever tier answered);
integers of any size are allowed (balances and token amounts exceed 64 bits). Treat returned
values as read-only: L1 hands the same object to every caller.

This module holds TieredCache. The L2 side lives in chrnode.chain.cache_l2 (`L2Store`,
`ReaderStore`, the value codec, `l2_key`, `L2_PREFIX` and the blob layout `l2_blob`/`l2_entry`);
the policies (`CachePolicy`, `CATEGORIES`) and `Hit` in chrnode.chain.cache_policy; the counts
behind `stats()` (`CacheCounts`) in chrnode.chain.cache_stats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import msgpack

from chrnode.chain.cache_l2 import L2_PREFIX, L2Store, decode_value, encode_value, l2_blob, l2_entry, l2_key
from chrnode.chain.cache_policy import CATEGORIES, CachePolicy, Hit
from chrnode.chain.cache_stats import CacheCounts
from chrnode.errors import ChainUnavailable, ChrError

log = logging.getLogger("chrnode.chain")

# How long an invalidated key skips L2 (its delete goes through the single writer, which applies
# it within its batch interval, 0.2 s) and refuses to store loads started before the invalidation.
INVALIDATION_MEMORY = 30.0


@dataclass
class _Entry:
    value: Any
    fresh_until: float
    policy: CachePolicy


def _new_flight() -> Future[Hit]:
    flight: Future[Hit] = Future()
    flight.set_running_or_notify_cancel()
    return flight


class TieredCache:
    """L1 + L2 + loader, thread-safe. See the module docstring."""

    def __init__(
        self,
        max_entries: int,
        store: L2Store | None = None,
        *,
        policies: Mapping[str, CachePolicy] = CATEGORIES,
        clock: Callable[[], float] = time.time,
        executor: Executor | None = None,
        wait_timeout: float = 60.0,
        l2_trusted_from: Mapping[str, float] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.store = store
        self.policies = dict(policies)
        self.clock = clock
        self.wait_timeout = wait_timeout
        # category -> time: an L2 entry of it stored earlier answers only as a stale fallback. The
        # node sets this for "contracts" to its start: chain events are watched from then on only,
        # so an entry from before a restart may predate a change nobody saw (chrnode.chain.watch).
        self.l2_trusted_from = dict(l2_trusted_from or {})
        self._executor = executor
        self._own_executor = executor is None
        self._lock = threading.Lock()
        self._l1: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._flights: dict[tuple[str, str], Future[Hit]] = {}
        self._counts = CacheCounts()
        self._closed = False
        # key -> when it was last invalidated: a load that started before must not be stored, and
        # L2 is not read for it until its delete has surely reached the single writer.
        self._invalidated: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
        self._generation = 0  # counts invalidations: a load remembers the count it started at

    # -- reading --------------------------------------------------------------------------------

    def get(self, category: str, key: str, loader: Callable[[], Any]) -> Any:
        return self.fetch(category, key, loader).value

    def fetch(
        self, category: str, key: str, loader: Callable[[], Any], keep: Callable[[Any], bool] | None = None
    ) -> Hit:
        """The value of (category, key) from L1, L2 or `loader` (see the module docstring).

        `keep(value)` false leaves a loaded value out of the cache (a receipt not mined yet)."""
        policy = self._policy(category)
        k = (category, key)
        now = self.clock()
        hit: Hit | None = None
        refresh: Future[Hit] | None = None
        with self._lock:
            self._counts.add("requests")
            entry = self._l1.get(k)
            if entry is not None and now < entry.fresh_until:
                self._l1.move_to_end(k)
                self._counts.tally(category, "l1_hits")
                hit = Hit(entry.value, "l1")
                refresh = self._start_refresh(k, entry, now)
            else:
                joined = self._flights.get(k)
                leader = joined is None
                if joined is None:
                    flight = self._flights[k] = _new_flight()
                else:
                    flight = joined
                    self._counts.add("merged")
        if hit is not None:
            if refresh is not None:
                self._submit_refresh(k, policy, loader, refresh, keep)
            return hit
        if not leader:
            return self._wait(k, flight)
        return self._lead(k, policy, loader, flight, check_l2=True, keep=keep)

    def peek(self, category: str, key: str) -> Hit | None:
        """The L1 entry if fresh, without loading or counting."""
        with self._lock:
            entry = self._l1.get((category, key))
            if entry is not None and self.clock() < entry.fresh_until:
                return Hit(entry.value, "l1")
        return None

    def _wait(self, k: tuple[str, str], flight: Future[Hit]) -> Hit:
        try:
            return flight.result(timeout=self.wait_timeout)
        except FutureTimeout as exc:
            raise ChainUnavailable(
                f"cache: no answer for {k[0]}/{k[1]} within {self.wait_timeout:g} s (a merged request)"
            ) from exc

    def _lead(
        self,
        k: tuple[str, str],
        policy: CachePolicy,
        loader: Callable[[], Any],
        flight: Future[Hit],
        check_l2: bool,
        keep: Callable[[Any], bool] | None = None,
    ) -> Hit:
        try:
            hit = self._resolve(k, policy, loader, check_l2, keep)
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        else:
            flight.set_result(hit)
            return hit
        finally:
            with self._lock:
                if self._flights.get(k) is flight:
                    del self._flights[k]

    def _resolve(
        self,
        k: tuple[str, str],
        policy: CachePolicy,
        loader: Callable[[], Any],
        check_l2: bool,
        keep: Callable[[Any], bool] | None,
    ) -> Hit:
        category, key = k
        now = self.clock()
        with self._lock:
            generation = self._generation
        stale: Hit | None = None
        if check_l2 and self.store is not None and not self._recently_invalidated(k, now):
            found = self._l2_read(k, now)
            if found is not None:
                fresh_until, value = found
                if now < fresh_until and fresh_until - policy.ttl >= self.l2_trusted_from.get(category, 0.0):
                    self._remember(k, value, fresh_until, policy)
                    self._tally(category, "l2_hits")
                    return Hit(value, "l2")
                stale = Hit(value, "l2", stale=True)
        self._tally(category, "loads")
        try:
            value = loader()
        except ChainUnavailable as exc:
            fallback = self._l1_fallback(k) or stale
            if fallback is None:
                self._tally(category, "load_errors")
                raise
            self._tally(category, "stale_served")
            log.warning(
                "chain unavailable, serving %s %s/%s: %s",
                "stale" if fallback.stale else "cached",
                category,
                key,
                exc,
            )
            return fallback
        except BaseException:
            self._tally(category, "load_errors")
            raise
        if (keep is not None and not keep(value)) or self._invalidated_since(k, generation):
            return Hit(decode_value(encode_value(value)), "chain")
        return Hit(self._store(k, value, policy), "chain")

    def _invalidated_since(self, k: tuple[str, str], generation: int) -> bool:
        """The chain changed `k` while it was loading: the loaded value may be the old one."""
        with self._lock:
            mark = self._invalidated.get(k)
        return mark is not None and mark[1] > generation

    def _recently_invalidated(self, k: tuple[str, str], now: float) -> bool:
        with self._lock:
            mark = self._invalidated.get(k)
        return mark is not None and now - mark[0] < INVALIDATION_MEMORY

    def _l1_fallback(self, k: tuple[str, str]) -> Hit | None:
        now = self.clock()
        with self._lock:
            entry = self._l1.get(k)
        if entry is None or now >= entry.fresh_until + entry.policy.stale_for:
            return None
        return Hit(entry.value, "l1", stale=now >= entry.fresh_until)

    # -- refresh ahead of expiry ----------------------------------------------------------------

    def _start_refresh(self, k: tuple[str, str], entry: _Entry, now: float) -> Future[Hit] | None:
        """Under the lock: a flight to reload `k` if its entry is in its refresh window."""
        window = entry.policy.ttl * entry.policy.refresh_ahead
        if window <= 0 or entry.fresh_until - now > window or k in self._flights or self._closed:
            return None
        flight = self._flights[k] = _new_flight()
        self._counts.add("refreshes")
        return flight

    def _submit_refresh(
        self,
        k: tuple[str, str],
        policy: CachePolicy,
        loader: Callable[[], Any],
        flight: Future[Hit],
        keep: Callable[[Any], bool] | None,
    ) -> None:
        def run() -> None:
            try:
                self._lead(k, policy, loader, flight, check_l2=False, keep=keep)
            except ChrError as exc:  # the entry stays until it expires; a later hit tries again
                self._tally(k[0], "refresh_errors")
                log.warning("background refresh of %s/%s failed: %s", k[0], k[1], exc)
            except Exception:
                self._tally(k[0], "refresh_errors")
                log.exception("background refresh of %s/%s failed", k[0], k[1])

        try:
            self._pool().submit(run)
        except RuntimeError as exc:  # the executor is shut down: nobody will refresh, release the key
            flight.set_exception(ChainUnavailable(f"cache closed while refreshing {k[0]}/{k[1]}"))
            with self._lock:
                self._flights.pop(k, None)
            log.debug("no refresh of %s/%s: %s", k[0], k[1], exc)

    def _pool(self) -> Executor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cache-refresh")
            return self._executor

    # -- writing --------------------------------------------------------------------------------

    def put(self, category: str, key: str, value: Any) -> Any:
        """Store a value known from elsewhere (L1 and L2); returns it in its cached form."""
        return self._store((category, key), value, self._policy(category))

    def invalidate(self, category: str, key: str) -> None:
        """Forget (category, key) in L1 and L2: the chain changed it (RemoteChain.Monitor saw the
        event). A load of it already under way is answered but not stored."""
        k = (category, key)
        now = self.clock()
        with self._lock:
            self._l1.pop(k, None)
            self._generation += 1
            self._invalidated[k] = (now, self._generation)
            self._invalidated.move_to_end(k)
            while (
                self._invalidated and now - next(iter(self._invalidated.values()))[0] >= INVALIDATION_MEMORY
            ):
                self._invalidated.popitem(last=False)
            self._counts.add("invalidations")
        if self.store is not None:
            try:
                self.store.delete(L2_PREFIX + category, l2_key(key))
            except ChrError as exc:
                self._tally(category, "l2_errors")
                log.warning("cannot delete %s/%s from the L2 cache: %s", category, key, exc)

    def invalidate_category(self, category: str) -> int:
        """Invalidate every L1 entry of `category` (a long unread gap of chain events); L2 entries
        without an L1 copy keep their TTL. Returns how many were dropped."""
        with self._lock:
            keys = [key for cat, key in self._l1 if cat == category]
        for key in keys:
            self.invalidate(category, key)
        return len(keys)

    def clear_memory(self) -> None:
        """Empty L1 (benchmarks measure L2 this way; a restarted node starts like this)."""
        with self._lock:
            self._l1.clear()

    def _store(self, k: tuple[str, str], value: Any, policy: CachePolicy) -> Any:
        raw = encode_value(value)
        cached = decode_value(raw)
        fresh_until = self.clock() + policy.ttl
        self._remember(k, cached, fresh_until, policy)
        if self.store is not None:
            blob = l2_blob(fresh_until, raw)
            try:
                self.store.put(L2_PREFIX + k[0], l2_key(k[1]), blob, fresh_until + policy.stale_for)
            except ChrError as exc:  # L2 is an optimisation: a failed write costs a chain call later
                self._tally(k[0], "l2_errors")
                log.warning("cannot write %s/%s to the L2 cache: %s", k[0], k[1], exc)
        return cached

    def _remember(self, k: tuple[str, str], value: Any, fresh_until: float, policy: CachePolicy) -> None:
        with self._lock:
            self._l1[k] = _Entry(value, fresh_until, policy)
            self._l1.move_to_end(k)
            while len(self._l1) > self.max_entries:
                self._l1.popitem(last=False)
                self._counts.add("evictions")

    def _l2_read(self, k: tuple[str, str], now: float) -> tuple[float, Any] | None:
        assert self.store is not None
        try:
            blob = self.store.get(L2_PREFIX + k[0], l2_key(k[1]), now)
        except ChrError as exc:  # StorageError: a miss, the chain still answers
            self._tally(k[0], "l2_errors")
            log.warning("cannot read %s/%s from the L2 cache: %s", k[0], k[1], exc)
            return None
        if blob is None:
            return None
        try:
            return l2_entry(blob)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            self._tally(k[0], "l2_errors")
            log.warning("ignoring unreadable L2 cache entry %s/%s: %s", k[0], k[1], exc)
            return None

    # -- bookkeeping ----------------------------------------------------------------------------

    def _policy(self, category: str) -> CachePolicy:
        policy = self.policies.get(category)
        if policy is None:
            known = ", ".join(self.policies)
            raise ValueError(f"unknown cache category {category!r}; expected one of {known}")
        return policy

    def _tally(self, category: str, what: str) -> None:
        with self._lock:
            self._counts.tally(category, what)

    def stats(self) -> dict[str, Any]:
        """Hit/miss counts per tier and ratios, for `network_stats` and metrics (SPEC 12)."""
        with self._lock:
            counts, entries = self._counts.copy(), len(self._l1)
        return counts.report(entries, self.max_entries)

    def close(self) -> None:
        """Stop background refreshes (waits for running ones, each bounded by its loader)."""
        with self._lock:
            self._closed = True
            executor, own = self._executor, self._own_executor
        if executor is not None and own:
            executor.shutdown(wait=True)
