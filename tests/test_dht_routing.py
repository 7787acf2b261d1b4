"""The routing table's rules (SPEC 6), as exact cases and as invariants under generated events."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.dht.ids import ID_BITS, Contact, as_id, as_int, bucket_index, distance, random_id_in_bucket
from chrnode.dht.routing import Probe, RoutingTable

OWN = as_id(0x5A << 152)


def at(offset: int) -> Contact:
    """The contact at XOR distance `offset` from OWN."""
    return Contact(as_id(as_int(OWN) ^ offset), "10.0.0.1", 51055)


def far(i: int) -> Contact:
    """Contacts that all fall in bucket 159."""
    return at((1 << 159) | i)


def test_bucket_index_is_the_distance_bit_length() -> None:
    assert bucket_index(OWN, at(1).address) == 0
    assert bucket_index(OWN, at(0b1011).address) == 3
    assert bucket_index(OWN, far(7).address) == 159
    rng = random.Random(4)
    for index in (0, 1, 80, 159):
        assert bucket_index(OWN, random_id_in_bucket(OWN, index, rng)) == index


def test_a_new_contact_enters_until_the_bucket_is_full_then_waits_as_replacement() -> None:
    table = RoutingTable(OWN, k=3)
    for i in range(3):
        assert table.heard_from(far(i), now=0.0) == []
    assert len(table) == 3
    # The least recently seen (far(0)) was heard from at t=0: fresh, so no probe yet.
    assert table.heard_from(far(3), now=1.0) == []
    assert far(3).address not in table
    assert table.bucket_contents()[159][1] == [far(3)]


def test_the_least_recently_seen_is_probed_and_its_answer_keeps_it() -> None:
    table = RoutingTable(OWN, k=3, fresh_for=10.0)
    for i in range(3):
        table.heard_from(far(i), now=0.0)
    probes = table.heard_from(far(3), now=20.0)
    assert probes == [Probe(far(0), "evict_check")]
    assert table.heard_from(far(4), now=21.0) == []  # one probe per bucket at a time
    table.heard_from(far(0), now=22.0)  # it answered: stays, now the most recently seen
    contacts, replacements = table.bucket_contents()[159]
    assert contacts == [far(1), far(2), far(0)]
    assert replacements == [far(3), far(4)]


def test_a_probe_that_fails_evicts_for_the_newest_replacement() -> None:
    table = RoutingTable(OWN, k=3, fresh_for=10.0)
    for i in range(3):
        table.heard_from(far(i), now=0.0)
    [probe] = table.heard_from(far(3), now=20.0)
    table.heard_from(far(4), now=21.0)
    table.failed(probe.contact.address, now=25.0)
    contacts, replacements = table.bucket_contents()[159]
    assert far(0) not in contacts
    assert contacts[-1] == far(4)
    assert replacements == [far(3)]


def test_a_contact_without_replacement_survives_failures_until_max_failures() -> None:
    table = RoutingTable(OWN, k=3, max_failures=3)
    table.heard_from(far(0), now=0.0)
    table.failed(far(0).address, now=1.0)
    table.failed(far(0).address, now=2.0)
    assert far(0).address in table and table.failures(far(0).address) == 2
    table.heard_from(far(0), now=3.0)  # an answer resets the count
    assert table.failures(far(0).address) == 0
    for t in (4.0, 5.0, 6.0):
        table.failed(far(0).address, now=t)
    assert far(0).address not in table


def test_a_failure_evicts_at_once_when_a_replacement_waits() -> None:
    table = RoutingTable(OWN, k=2)
    table.heard_from(far(0), now=0.0)
    table.heard_from(far(1), now=0.0)
    table.heard_from(far(2), now=1.0)  # replacement
    table.failed(far(1).address, now=2.0)
    assert [c.address for c in table.bucket_contents()[159][0]] == [far(0).address, far(2).address]


def test_a_learned_contact_is_pending_until_it_answers_itself() -> None:
    table = RoutingTable(OWN, k=3)
    assert table.learned(at(5), now=0.0) == [Probe(at(5), "verify")]
    assert at(5).address not in table
    assert table.closest(at(5).address) == []
    assert table.learned(at(5), now=0.0) == []  # already pending
    table.heard_from(at(5), now=1.0)
    assert table.closest(at(5).address) == [at(5)]
    assert table.pending() == []


def test_learned_contacts_are_bounded_and_not_probed_into_a_full_bucket() -> None:
    table = RoutingTable(OWN, k=2, max_pending=3)
    table.heard_from(far(0), now=0.0)
    table.heard_from(far(1), now=0.0)
    assert table.learned(far(2), now=0.0) == []  # full bucket: it would only be a replacement
    probes = [p for i in range(1, 10) for p in table.learned(at(i << 8), now=0.0)]
    assert len(probes) == 3 and len(table.pending()) == 3
    table.failed(probes[0].contact.address, now=1.0)  # an unanswered verification is forgotten
    assert len(table.pending()) == 2 and len(table) == 2


def test_own_id_never_enters() -> None:
    table = RoutingTable(OWN)
    assert table.heard_from(Contact(OWN), now=0.0) == []
    assert table.learned(Contact(OWN), now=0.0) == []
    assert len(table) == 0 and OWN not in table


def test_refresh_covers_untouched_buckets_from_the_nearest_populated_one() -> None:
    table = RoutingTable(OWN, started=0.0)
    table.heard_from(at(1 << 150), now=0.0)
    table.heard_from(far(1), now=0.0)
    assert table.stale_buckets(now=10.0, interval=100.0) == []
    assert table.stale_buckets(now=100.0, interval=100.0) == list(range(150, ID_BITS))
    table.touch(random_id_in_bucket(OWN, 155, random.Random(1)), now=100.0)
    assert 155 not in table.stale_buckets(now=150.0, interval=100.0)
    assert 156 in table.stale_buckets(now=150.0, interval=100.0)


# -- invariants under generated event sequences ----------------------------------------------

# A pool of ids that crowd a few buckets (so k = 3 fills them) and include OWN itself.
_POOL = [OWN] + [at((1 << b) | j).address for b in (0, 1, 2, 3, 40, 159) for j in range(6) if j < 1 << b]
_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["heard", "learned", "failed", "answer_probe", "fail_probe"]),
        st.sampled_from(_POOL),
        st.floats(min_value=0.0, max_value=30.0),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(_EVENTS, st.sampled_from(_POOL))
def test_table_invariants_hold_under_any_event_sequence(
    events: list[tuple[str, bytes, float]], target: bytes
) -> None:
    k = 3
    table = RoutingTable(OWN, k=k, max_failures=2, max_pending=4, fresh_for=10.0)
    heard: set[bytes] = set()  # addresses that ever spoke to us themselves
    open_probes: list[Probe] = []
    now = 0.0
    for kind, address, dt in events:
        now += dt
        contact = Contact(address, "10.0.0.2", 51055)
        if kind == "heard":
            heard.add(address)
            probes = table.heard_from(contact, now)
        elif kind == "learned":
            probes = table.learned(contact, now)
        elif kind == "failed":
            probes = table.failed(address, now)
        elif open_probes:
            probe = open_probes.pop(0)
            if kind == "answer_probe":
                heard.add(probe.contact.address)
                probes = table.heard_from(probe.contact, now)
            else:
                probes = table.failed(probe.contact.address, now)
        else:
            probes = []
        for probe in probes:
            assert probe.contact.address != OWN
            if probe.purpose == "evict_check":
                assert probe.contact.address in table  # only a table member is probed for eviction
                contacts, _ = table.bucket_contents()[bucket_index(OWN, probe.contact.address)]
                assert len(contacts) == k
            else:
                assert probe.contact.address not in table
        open_probes += probes

        contents = table.bucket_contents()
        assert sum(len(c) for c, _ in contents.values()) == len(table)
        for index, (contacts, replacements) in contents.items():
            assert len(contacts) <= k and len(replacements) <= k
            addresses = {c.address for c in contacts}
            assert not addresses & {r.address for r in replacements}
            for c in contacts + replacements:
                assert bucket_index(OWN, c.address) == index
        members = {c.address for c in table}
        assert OWN not in members
        assert members <= heard  # nothing enters that has not answered itself
        assert not members & {p.address for p in table.pending()}
        assert len(table.pending()) <= 4

    nearest = table.closest(target, 5)
    expected = sorted((c.address for c in table), key=lambda a: distance(a, target))[:5]
    assert [c.address for c in nearest] == expected
