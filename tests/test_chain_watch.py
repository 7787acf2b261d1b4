"""chrnode.chain.watch: which cache keys a block's events drop, and the block cursor (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode
from hypothesis import given
from hypothesis import strategies as st

from chrnode.chain import hexcodec as hx
from chrnode.chain.abi import ContractAbi
from chrnode.chain.cache import TieredCache
from chrnode.chain.watch import (
    ChainWatch,
    bns_key,
    fleet_member_key,
    fleet_open_key,
    fleet_terms_key,
)
from chrnode.errors import ChainError, ChainUnavailable

FLEET, OTHER_FLEET, BNS = b"\xf1" * 20, b"\xf2" * 20, b"\xb1" * 20
FLEET_ABI = ContractAbi.from_artifact("Fleet")
BNS_ABI = ContractAbi.from_artifact("BnsRegistry")


def log(
    abi: ContractAbi, event: str, emitter: bytes, topics: list[bytes], types: list[str], values: list[Any]
) -> dict[str, Any]:
    return {
        "address": hx.hex_address(emitter),
        "topics": [hx.hex_data(abi.event_topic(event)), *(hx.hex_data(t) for t in topics)],
        "data": hx.hex_data(encode(types, values)),
        "blockNumber": "0x5",
    }


def device_allowed(fleet: bytes, device: bytes, allowed: bool) -> dict[str, Any]:
    return log(FLEET_ABI, "DeviceAllowed", fleet, [bytes(12) + device], ["bool"], [allowed])


def name_updated(emitter: bytes, namespace: str) -> dict[str, Any]:
    key = b"\x00" * 32
    return log(BNS_ABI, "NameUpdated", emitter, [key], ["string", "address[]", "uint64"], [namespace, [], 1])


def started(head: int = 10) -> ChainWatch:
    watch = ChainWatch(bns=BNS)
    assert watch.next_span(head) is None  # the first head only sets the cursor
    return watch


def test_each_event_drops_the_key_it_changes() -> None:
    watch = started()
    device, node = b"\x0d" * 20, b"\x0e" * 20
    logs = [
        device_allowed(FLEET, device, False),
        log(FLEET_ABI, "NodeAllowed", OTHER_FLEET, [bytes(12) + node], ["bool"], [True]),
        log(FLEET_ABI, "DevicesOpenChanged", FLEET, [], ["bool"], [True]),
        log(FLEET_ABI, "PriceChanged", FLEET, [], ["uint256"], [7]),
        name_updated(BNS, "com:mysite"),
        name_updated(b"\x66" * 20, "com:other"),  # not the configured registry: ignored
        {"address": hx.hex_address(FLEET), "topics": ["0x" + "ab" * 32], "data": "0x"},  # not watched
    ]
    assert watch.next_span(12) == (11, 12)
    drop = watch.observe(11, 12, logs)
    assert drop.keys == (
        fleet_member_key(FLEET, "device", device),
        fleet_member_key(OTHER_FLEET, "node", node),
        fleet_open_key(FLEET),
        fleet_terms_key(FLEET),
        bns_key("com:mysite"),
    )
    assert not drop.everything and watch.events_seen == 5
    assert watch.next_span(12) is None and watch.next_span(13) == (13, 13)


def test_filter_names_every_watched_event_and_the_span() -> None:
    watch = started()
    params = watch.logs_filter(11, 20)
    assert params["fromBlock"] == "0xb" and params["toBlock"] == "0x14"
    (topics,) = params["topics"]
    assert hx.hex_data(FLEET_ABI.event_topic("DeviceAllowed")) in topics
    assert hx.hex_data(BNS_ABI.event_topic("NameTransferred")) in topics
    assert "address" not in params  # any fleet: a ticket names its own (SPEC 5 step 4)
    assert len(ChainWatch(bns=None).logs_filter(1, 1)["topics"][0]) == len(topics) - 3


def test_a_long_gap_drops_everything_and_moves_on() -> None:
    watch = started(10)
    span = watch.next_span(5000)
    assert span == (11, 5000) and watch.too_long(*span)
    drop = watch.skip(*span)
    assert drop.everything and "4990 blocks" in drop.reason
    assert watch.next_span(5001) == (5001, 5001) and not watch.too_long(5001, 5001)


def test_a_malformed_log_is_an_error_and_the_cursor_stays() -> None:
    watch = started()
    assert watch.next_span(11) == (11, 11)
    with pytest.raises(ChainError, match="malformed log"):
        watch.observe(11, 11, [{"address": "nope", "topics": []}])
    with pytest.raises(ChainError, match="expected log objects"):
        watch.observe(11, 11, ["0x00"])
    assert watch.next_span(11) == (11, 11)


@given(heads=st.lists(st.integers(0, 3000), min_size=1, max_size=30), lookback=st.integers(0, 20))
def test_spans_cover_every_block_once_in_order(heads: list[int], lookback: int) -> None:
    watch = ChainWatch(bns=BNS, max_span=100, lookback=lookback)
    covered: list[int] = []
    for head in heads:
        span = watch.next_span(head)
        if span is None:
            continue
        if watch.too_long(*span):
            watch.skip(*span)
        else:
            watch.observe(*span, [])
        covered.extend(range(span[0], span[1] + 1))
    assert covered == sorted(set(covered))
    if covered:
        assert covered[0] == max(0, heads[0] - lookback + 1) if lookback else covered[0] == heads[0] + 1
        assert covered[-1] == max(heads)
    elif lookback:
        raise AssertionError("the first head always starts a span when looking back")


def test_the_first_head_reads_a_few_blocks_back() -> None:
    watch = ChainWatch(bns=BNS, lookback=16)
    assert watch.next_span(100) == (85, 100)
    assert watch.observe(85, 100, []).keys == ()
    assert watch.next_span(100) is None and watch.next_span(101) == (101, 101)
    assert ChainWatch(bns=BNS, lookback=16).next_span(3) == (0, 3)
    with pytest.raises(ValueError, match="lookback"):
        ChainWatch(bns=BNS, max_span=10, lookback=11)


def test_invalidated_key_is_reloaded_and_a_load_under_way_is_not_kept() -> None:
    now = [1000.0]
    cache = TieredCache(10, clock=lambda: now[0])
    value = [True]
    assert cache.get("contracts", "k", lambda: value[0]) is True
    value[0] = False
    assert cache.get("contracts", "k", lambda: value[0]) is True  # cached for the TTL
    cache.invalidate("contracts", "k")
    now[0] += 0.001
    assert cache.get("contracts", "k", lambda: value[0]) is False

    def slow_load() -> bool:  # the chain changes while the old answer is on its way
        cache.invalidate("contracts", "j")
        now[0] += 0.001
        return True

    assert cache.get("contracts", "j", slow_load) is True  # answered ...
    assert cache.get("contracts", "j", lambda: False) is False  # ... but not kept
    assert cache.stats()["invalidations"] == 2


class MemoryL2:
    """An L2Store that keeps the bytes in a dict (the real one is SQLite: test_chain_cache)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[bytes, float]] = {}

    def get(self, namespace: str, key: str, now: float) -> bytes | None:
        row = self.rows.get((namespace, key))
        return row[0] if row is not None and now < row[1] else None

    def put(self, namespace: str, key: str, value: bytes, expires_at: float) -> None:
        self.rows[(namespace, key)] = (value, expires_at)

    def delete(self, namespace: str, key: str) -> None:
        self.rows.pop((namespace, key), None)


def test_after_a_restart_l2_contract_entries_from_before_are_only_a_fallback() -> None:
    now = [1000.0]
    l2 = MemoryL2()
    before = TieredCache(10, l2, clock=lambda: now[0])
    assert before.get("contracts", "fleet:x:device:y", lambda: True) is True
    assert before.get("tickets", "proof", lambda: 1) == 1
    now[0] += 60  # the node restarts: events of the last minute were never watched
    after = TieredCache(10, l2, clock=lambda: now[0], l2_trusted_from={"contracts": now[0]})
    assert after.get("contracts", "fleet:x:device:y", lambda: False) is False  # read anew
    assert after.get("tickets", "proof", lambda: 2) == 1  # other categories: L2 as before

    def down() -> bool:
        raise ChainUnavailable("no endpoint")

    again = TieredCache(10, l2, clock=lambda: now[0], l2_trusted_from={"contracts": now[0] + 1})
    hit = again.fetch("contracts", "fleet:x:device:y", down)
    assert hit.value is False and hit.stale  # with the chain down, the old entry still serves
