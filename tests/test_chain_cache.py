"""TieredCache (SPEC 7): L1 LRU, L2 on a real SQLite file, TTLs, merged loads, stale serving,
refresh ahead of expiry. A manual clock drives the TTLs; threads are real."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.chain.cache import TieredCache
from chrnode.chain.cache_l2 import L2_PREFIX, decode_value, encode_value, l2_key
from chrnode.chain.cache_policy import CATEGORIES, CachePolicy
from chrnode.errors import ChainUnavailable, ContractError
from chrnode.testing.chain import DirectL2


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Loader:
    """Counts calls; returns successive values or raises what it is told to."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values) or ["v"]
        self.calls = 0
        self.error: BaseException | None = None

    def __call__(self) -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.values[min(self.calls, len(self.values)) - 1]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def l2(tmp_path: Path) -> Iterator[DirectL2]:
    store = DirectL2(tmp_path / "chr-node.sqlite")
    yield store
    store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_seed_ttls() -> None:
    assert {name: p.ttl for name, p in CATEGORIES.items() if name != "immutable"} == {
        "peer": 300.0,
        "blocks": 60.0,
        "contracts": 300.0,
        "stats": 30.0,
        "tickets": 3600.0,
    }
    assert CATEGORIES["tickets"].refresh_ahead > 0
    assert all(p.refresh_ahead == 0 for n, p in CATEGORIES.items() if n != "tickets")


def test_l1_hit_does_not_call_the_loader(clock: Clock) -> None:
    cache = TieredCache(10, clock=clock)
    load = Loader("x")
    assert cache.fetch("contracts", "k", load).tier == "chain"
    hit = cache.fetch("contracts", "k", load)
    assert (hit.value, hit.tier, hit.stale, load.calls) == ("x", "l1", False, 1)
    assert cache.stats()["hits"] == {"l1": 1, "l2": 0, "chain": 1}
    assert cache.stats()["ratios"]["l1"] == 0.5


def test_entries_expire_after_their_category_ttl(clock: Clock) -> None:
    cache = TieredCache(10, clock=clock)
    load = Loader("old", "new")
    cache.get("blocks", "head", load)
    clock.now += 59.9
    assert cache.get("blocks", "head", load) == "old"
    clock.now += 0.2
    assert cache.get("blocks", "head", load) == "new"
    assert load.calls == 2


def test_l1_is_a_bounded_lru(clock: Clock) -> None:
    cache = TieredCache(2, clock=clock)
    loads = {k: Loader(k) for k in "abc"}
    cache.get("peer", "a", loads["a"])
    cache.get("peer", "b", loads["b"])
    cache.get("peer", "a", loads["a"])  # a is now the most recent
    cache.get("peer", "c", loads["c"])  # evicts b
    assert cache.peek("peer", "a") is not None and cache.peek("peer", "b") is None
    assert cache.stats()["evictions"] == 1 and cache.stats()["entries"] == 2


def test_l2_answers_after_a_restart_and_expires(l2: DirectL2, clock: Clock) -> None:
    first = TieredCache(10, l2, clock=clock)
    first.get("contracts", "bns:com:x", Loader([b"\x01" * 20, 7]))
    assert l2.writes == 1
    second = TieredCache(10, l2, clock=clock)  # a restarted node: empty L1, same file
    load = Loader("unused")
    hit = second.fetch("contracts", "bns:com:x", load)
    assert (hit.value, hit.tier, load.calls) == ([b"\x01" * 20, 7], "l2", 0)
    assert second.fetch("contracts", "bns:com:x", load).tier == "l1"  # promoted
    clock.now += 301
    third = TieredCache(10, l2, clock=clock)
    assert third.fetch("contracts", "bns:com:x", Loader("fresh")).value == "fresh"


def test_values_have_one_form_whatever_the_tier(l2: DirectL2, clock: Clock) -> None:
    value = (b"\x00" * 20, (1, 2), 10**30, -(2**70), {"k": None})
    cache = TieredCache(10, l2, clock=clock)
    from_chain = cache.get("contracts", "v", Loader(value))
    from_l2 = TieredCache(10, l2, clock=clock).get("contracts", "v", Loader("unused"))
    assert from_chain == from_l2 == [b"\x00" * 20, [1, 2], 10**30, -(2**70), {"k": None}]


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.binary(max_size=40) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )
)
def test_codec_round_trips_any_cacheable_value(value: Any) -> None:
    assert decode_value(encode_value(value)) == value


def test_uncacheable_values_and_unknown_categories_are_refused(clock: Clock) -> None:
    cache = TieredCache(10, clock=clock)
    with pytest.raises(TypeError, match="cannot cache a value of type object"):
        cache.get("contracts", "k", lambda: object())
    with pytest.raises(ValueError, match="unknown cache category 'nope'"):
        cache.get("nope", "k", Loader())
    with pytest.raises(ValueError, match="max_entries"):
        TieredCache(0)
    with pytest.raises(ValueError, match="bad cache policy"):
        CachePolicy(ttl=0)


def test_identical_requests_in_flight_share_one_load(clock: Clock) -> None:
    cache = TieredCache(10, clock=clock)
    release = threading.Event()
    calls = []

    def slow() -> str:
        calls.append(1)
        assert release.wait(10)
        return "shared"

    results: list[Any] = []

    def call() -> None:
        results.append(cache.fetch("peer", "p", slow))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: cache.stats()["merged"] == 7)
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert [r.value for r in results] == ["shared"] * 8


def test_a_failed_load_fails_every_merged_waiter_and_is_not_cached(clock: Clock) -> None:
    cache = TieredCache(10, clock=clock)
    release = threading.Event()

    def broken() -> str:
        assert release.wait(10)
        raise ContractError("reverted")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            cache.get("contracts", "c", broken)
        except ContractError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: cache.stats()["merged"] == 2)
    release.set()
    for t in threads:
        t.join(10)
    assert len(errors) == 3
    assert cache.get("contracts", "c", Loader("ok")) == "ok"
    assert cache.stats()["load_errors"] == 1


def test_a_waiter_gives_up_after_wait_timeout(clock: Clock) -> None:
    cache = TieredCache(10, clock=clock, wait_timeout=0.05)
    release = threading.Event()
    leader = threading.Thread(target=lambda: cache.get("peer", "p", lambda: release.wait(10)))
    leader.start()
    wait_until(lambda: cache.stats()["hits"]["chain"] == 1)
    started = time.monotonic()
    with pytest.raises(ChainUnavailable, match=r"within 0\.05 s"):
        cache.get("peer", "p", Loader())
    assert time.monotonic() - started < 2
    release.set()
    leader.join(10)


def test_stale_entries_serve_only_while_the_chain_is_unavailable(clock: Clock) -> None:
    policies = {"contracts": CachePolicy(300.0, stale_for=600.0)}
    cache = TieredCache(10, policies=policies, clock=clock)
    load = Loader("cached")
    cache.get("contracts", "k", load)
    clock.now += 301
    load.error = ChainUnavailable("all endpoints down")
    hit = cache.fetch("contracts", "k", load)
    assert (hit.value, hit.stale) == ("cached", True)
    assert cache.stats()["stale_served"] == 1
    load.error = ContractError("reverted")  # a real answer from the chain is never hidden
    with pytest.raises(ContractError):
        cache.fetch("contracts", "k", load)
    clock.now += 600
    load.error = ChainUnavailable("still down")
    with pytest.raises(ChainUnavailable, match="still down"):
        cache.fetch("contracts", "k", load)
    with pytest.raises(ChainUnavailable):  # nothing cached under another key
        cache.fetch("contracts", "other", load)


def test_stale_entries_come_from_l2_after_a_restart(l2: DirectL2, clock: Clock) -> None:
    TieredCache(10, l2, clock=clock).get("contracts", "k", Loader("persisted"))
    clock.now += 400
    down = Loader()
    down.error = ChainUnavailable("down")
    hit = TieredCache(10, l2, clock=clock).fetch("contracts", "k", down)
    assert (hit.value, hit.tier, hit.stale) == ("persisted", "l2", True)


def test_keep_false_leaves_a_value_out_of_the_cache(clock: Clock) -> None:
    cache = TieredCache(10, clock=clock)
    load = Loader(None, {"status": "0x1"})

    def keep(value: Any) -> bool:
        return value is not None

    assert cache.fetch("immutable", "receipt", load, keep).value is None
    assert cache.fetch("immutable", "receipt", load, keep).value == {"status": "0x1"}
    assert cache.fetch("immutable", "receipt", load, keep).tier == "l1"
    assert load.calls == 2


def test_ticket_entries_refresh_in_the_background_before_they_expire(clock: Clock) -> None:
    cache = TieredCache(10, clock=clock)
    load = Loader("v1", "v2")
    cache.get("tickets", "t", load)
    clock.now += 3600 * 0.5
    assert cache.get("tickets", "t", load) == "v1" and load.calls == 1  # not in the window yet
    clock.now += 3600 * 0.45  # 95% of the TTL: in the last 10%
    assert cache.get("tickets", "t", load) == "v1"  # answered at once from L1
    wait_until(lambda: cache.peek("tickets", "t") is not None and cache.peek("tickets", "t").value == "v2")
    clock.now += 3600 * 0.5  # the old entry would have expired; the refreshed one has not
    hit = cache.fetch("tickets", "t", load)
    assert (hit.value, hit.tier, load.calls) == ("v2", "l1", 2)
    assert cache.stats()["refreshes"] == 1
    cache.close()


def test_a_failed_background_refresh_keeps_the_entry(clock: Clock) -> None:
    cache = TieredCache(10, clock=clock)
    load = Loader("v1")
    cache.get("tickets", "t", load)
    load.error = ChainUnavailable("down")
    clock.now += 3600 * 0.95
    assert cache.get("tickets", "t", load) == "v1"
    wait_until(lambda: load.calls == 2)
    wait_until(lambda: cache.stats()["stale_served"] == 1)
    assert cache.fetch("tickets", "t", load).value == "v1"
    cache.close()


def test_long_keys_are_hashed_for_l2_and_unreadable_rows_ignored(l2: DirectL2, clock: Clock) -> None:
    long_key = "eth_call:" + "ab" * 500
    assert len(l2_key(long_key)) < 100 and l2_key("short") == "short"
    TieredCache(10, l2, clock=clock).get("blocks", long_key, Loader("big"))
    assert TieredCache(10, l2, clock=clock).fetch("blocks", long_key, Loader("x")).tier == "l2"
    l2.put(L2_PREFIX + "blocks", "corrupt", b"\xc1 not msgpack", clock.now + 100)
    cache = TieredCache(10, l2, clock=clock)
    assert cache.get("blocks", "corrupt", Loader("reloaded")) == "reloaded"
    assert cache.stats()["l2_errors"] == 1
