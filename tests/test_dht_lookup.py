"""The event-driven lookup (SPEC 6): alpha in flight, no rounds, soft and hard timeouts, done
when the k closest have answered; and the lockstep baseline on the same worlds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.dht.ids import ID_BITS, Contact, as_id, as_int
from chrnode.dht.lockstep import LockstepLookup
from chrnode.dht.lookup import Lookup, LookupMachine, State
from chrnode.dht.store import Value

TARGET = as_id(0)


def c(n: int) -> Contact:
    """The contact at distance n from TARGET (n > 0)."""
    return Contact(as_id(n))


def test_alpha_queries_start_and_each_answer_sends_the_next_at_once() -> None:
    lookup = Lookup(TARGET, [c(n) for n in range(100, 110)], k=4, alpha=3)
    assert lookup.start() == [c(100), c(101), c(102)]
    # One answer, with two others still out: the next query leaves now, not after a round.
    assert lookup.answered(c(100).address, []) == [c(103)]
    assert lookup.answered(c(103).address, [c(5), c(6)]) == [c(5)]
    assert not lookup.done


def test_a_soft_timeout_frees_the_slot_and_a_late_answer_still_counts() -> None:
    lookup = Lookup(TARGET, [c(n) for n in range(100, 104)], k=3, alpha=1)
    assert lookup.start() == [c(100)]
    assert lookup.soft_timeout(c(100).address) == [c(101)]
    # The slow contact answers late: its contacts join the lookup.
    assert lookup.answered(c(100).address, [c(7)]) == []  # the one slot is still c(101)'s
    assert lookup.answered(c(101).address, []) == [c(7)]
    lookup.answered(c(7).address, [])
    assert lookup.done
    assert lookup.result().closest == [c(7), c(100), c(101)]


def test_a_silent_contact_does_not_hold_up_completion() -> None:
    lookup = Lookup(TARGET, [c(1), c(2), c(3)], k=2, alpha=3)
    assert lookup.start() == [c(1), c(2)]  # the window is the k = 2 closest
    lookup.answered(c(2).address, [])
    assert lookup.soft_timeout(c(1).address) == []  # slot freed; c(1) may still answer
    assert not lookup.done  # c(1), the closest, is still in the window
    assert lookup.abandon(c(1).address) == [c(3)]  # out of the window: c(3) comes in
    lookup.answered(c(3).address, [])
    assert lookup.done  # without waiting for c(1)'s hard timeout
    assert lookup.result().closest == [c(2), c(3)]


def test_a_slow_closest_contact_that_answers_before_it_is_abandoned_counts() -> None:
    lookup = Lookup(TARGET, [c(1), c(2), c(3)], k=2, alpha=1)
    assert lookup.start() == [c(1)]
    assert lookup.soft_timeout(c(1).address) == [c(2)]
    lookup.answered(c(2).address, [])
    assert not lookup.done
    lookup.answered(c(1).address, [])
    assert lookup.done and lookup.result().closest == [c(1), c(2)]


def test_a_failure_asks_the_next_and_never_returns_the_failed() -> None:
    lookup = Lookup(TARGET, [c(1), c(2), c(3)], k=2, alpha=1)
    assert lookup.start() == [c(1)]
    assert lookup.failed(c(1).address) == [c(2)]
    lookup.answered(c(2).address, [c(1)])  # a peer naming the failed contact again
    assert lookup.answered(c(3).address, []) == []
    assert lookup.done and lookup.result().closest == [c(2), c(3)]
    assert lookup.result().failures == 1


def test_unsolicited_and_repeated_answers_are_ignored() -> None:
    lookup = Lookup(TARGET, [c(1), c(2)], k=2, alpha=1)
    lookup.start()
    assert lookup.answered(c(2).address, [c(9)]) == []  # never asked
    assert lookup.answered(c(77).address, [c(9)]) == []  # a stranger
    lookup.answered(c(1).address, [])
    assert lookup.answered(c(1).address, [c(3)]) == []  # twice
    assert c(3).address not in lookup.candidates.by_address


def test_find_value_stops_at_the_value_and_names_where_to_cache() -> None:
    lookup = Lookup(TARGET, [c(1), c(2), c(3)], k=3, alpha=1, find_value=True)
    lookup.start()
    lookup.answered(c(1).address, [])
    value = Value(TARGET, seq=4, expires=1e12)
    lookup.found(c(2).address, value)
    result = lookup.result()
    assert lookup.done and result.ok and result.value == value
    assert result.value_from == c(2) and result.cache_at == c(1)


def test_find_value_refuses_an_object_of_another_key() -> None:
    lookup = Lookup(TARGET, [c(1), c(2)], k=2, alpha=1, find_value=True)
    lookup.start()
    assert lookup.found(c(1).address, Value(as_id(99), 1, 1e12)) == [c(2)]
    assert not lookup.done and lookup.result().failures == 1


def test_own_address_is_never_queried() -> None:
    lookup = Lookup(TARGET, [c(1), c(2)], own=c(1).address, k=2, alpha=3)
    assert lookup.start() == [c(2)]
    lookup.answered(c(2).address, [c(1), c(3)])
    assert c(1).address not in lookup.candidates.by_address


def test_no_one_to_ask_is_done_at_once_and_not_ok() -> None:
    lookup = Lookup(TARGET, [])
    assert lookup.start() == [] and lookup.done and not lookup.result().ok


# -- generated worlds --------------------------------------------------------------------------


def drive(
    machine: LookupMachine, world: dict[bytes, str], answers: dict[bytes, list[Contact]], rng: random.Random
) -> tuple[set[bytes], int]:
    """Run `machine` against `world` (address -> ok/dead/silent), resolving queries in a random
    order; returns the addresses queried and the most queries ever in flight."""
    queried: set[bytes] = set()
    open_: list[tuple[bytes, str]] = []  # (address, what happens next)
    peak = 0

    def send(contacts: list[Contact]) -> None:
        nonlocal peak
        for contact in contacts:
            assert contact.address not in queried, "a contact was queried twice"
            queried.add(contact.address)
            behaviour = world[contact.address]
            open_.append((contact.address, {"ok": "answer", "dead": "fail", "silent": "soft"}[behaviour]))
        peak = max(peak, sum(1 for _, step in open_ if step in ("answer", "fail", "soft")))

    send(machine.start())
    while open_ and not machine.done:
        address, step = open_.pop(rng.randrange(len(open_)))
        if step == "answer":
            send(machine.answered(address, answers[address]))
        elif step == "fail":
            send(machine.failed(address))
        elif step == "soft":
            send(machine.soft_timeout(address))
            open_.append((address, "abandon"))
        elif step == "abandon":
            send(machine.abandon(address))
            open_.append((address, "hard"))
        else:
            send(machine.failed(address))
    return queried, peak


_WORLDS = st.tuples(
    st.integers(min_value=1, max_value=120),  # nodes
    st.floats(min_value=0.0, max_value=0.5),  # share that is dead
    st.floats(min_value=0.0, max_value=0.5),  # share that is silent
    st.integers(min_value=0, max_value=2**32),  # seed
)


def build(nodes: int, dead: float, silent: float, seed: int) -> tuple[dict[bytes, str], random.Random]:
    rng = random.Random(seed)
    world: dict[bytes, str] = {}
    for _ in range(nodes):
        roll = rng.random()
        world[as_id(rng.getrandbits(ID_BITS))] = (
            "dead" if roll < dead else "silent" if roll < dead + silent else "ok"
        )
    return world, rng


@pytest.mark.parametrize("factory", [Lookup, LockstepLookup])
@settings(max_examples=150, deadline=None)
@given(_WORLDS)
def test_lookup_finds_the_k_closest_live_nodes_it_heard_of(
    factory: type, spec: tuple[int, float, float, int]
) -> None:
    world, rng = build(*spec)
    k, alpha = 8, 3
    everyone = [Contact(a) for a in world]
    target = as_id(rng.getrandbits(ID_BITS))
    by_target = sorted(everyone, key=lambda x: as_int(x.address) ^ as_int(target))
    # Each node answers with the 2k nodes closest to the target that it knows: half of them.
    answers = {
        a: [x for x in by_target if x.address != a and (as_int(x.address) + as_int(a)) % 2 == 0][: 2 * k]
        for a in world
    }
    seeds = rng.sample(everyone, min(len(everyone), 4))
    machine = factory(target, seeds, k=k, alpha=alpha)
    queried, peak = drive(machine, world, answers, rng)
    assert machine.done
    assert peak <= k
    result = machine.result()
    heard = set(machine.candidates.by_address)
    live_heard = sorted((a for a in heard if world[a] == "ok"), key=lambda a: as_int(a) ^ as_int(target))
    closest = [x.address for x in result.closest]
    assert all(world[a] == "ok" and a in queried for a in closest)  # only nodes that answered
    assert closest == sorted(closest, key=lambda a: as_int(a) ^ as_int(target))
    assert closest == live_heard[:k]
    if all(state == "ok" for state in world.values()):
        assert closest == [x.address for x in by_target[:k]] or len(heard) < len(world)


def test_past_the_three_closest_a_soft_timeout_abandons_at_once() -> None:
    lookup = Lookup(TARGET, [c(n) for n in range(1, 7)], k=5, alpha=5)
    assert lookup.start() == [c(1), c(2), c(3), c(4), c(5)]
    for n in (1, 2, 3, 4):
        lookup.answered(c(n).address, [])
    # c(5) is 5th of the window: not worth the wait, c(6) is asked in its place at once.
    assert lookup.soft_timeout(c(5).address) == [c(6)]
    assert lookup.candidates.by_address[c(5).address].state is State.ABANDONED
    lookup.answered(c(6).address, [])
    assert lookup.done and lookup.result().closest == [c(1), c(2), c(3), c(4), c(6)]


def test_among_the_three_closest_a_soft_timeout_keeps_the_contact_in_the_window() -> None:
    lookup = Lookup(TARGET, [c(n) for n in range(1, 7)], k=5, alpha=5)
    lookup.start()
    for n in (2, 3, 4, 5):
        lookup.answered(c(n).address, [])
    assert lookup.soft_timeout(c(1).address) == []
    assert lookup.candidates.by_address[c(1).address].state is State.SLOW and not lookup.done
    assert lookup.abandon(c(1).address) == [c(6)]
