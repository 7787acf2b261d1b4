"""Connection.Pool's rules (chrnode.peer.pool), pure: generated event sequences and the invariants."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.peer.pool import Close, Dial, Ping, Pool, PoolConfig, Seen, State

A, B, C, D, E = (bytes([n]) * 20 for n in (0xAA, 0xBB, 0xCC, 0xDD, 0xEE))


def pool(**kw: float) -> Pool:
    return Pool(PoolConfig(**kw), random.Random(1))  # type: ignore[arg-type]


def test_one_dial_then_reuse() -> None:
    p = pool()
    assert p.want(A, "h", 1, 0.0) == [Dial(A, "h", 1)]
    assert p.want(A, "h", 1, 0.1) == []  # dialling already
    assert p.dialed(A, 0.2) == [Seen(A, True, 0.5)]
    assert p.want(A, "h", 1, 0.3) == [] and p.is_up(A)


def test_pinned_peer_is_redialled_with_growing_bounded_backoff() -> None:
    p = pool(backoff_initial=1.0, backoff_max=8.0)
    p.want(A, "h", 1, 0.0, pinned=True)
    now, delays = 0.0, []
    for _ in range(8):
        p.dial_failed(A, now)
        attempt = p.peers[A].next_attempt
        delays.append(attempt - now)
        assert p.tick(attempt - 0.001) == []
        now = attempt
        assert p.tick(now) == [Dial(A, "h", 1)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert delays[-1] > delays[0] * 2


def test_unpinned_peer_is_forgotten_after_close_unless_wanted() -> None:
    p = pool()
    p.inbound(B, "h", 2, 0.0)
    p.closed(B, 1.0)
    assert B not in p.peers
    p.want(A, "h", 1, 0.0)
    p.dialed(A, 0.0)
    p.closed(A, 1.0)
    assert p.peers[A].state is State.BACKOFF


def test_health_ping_and_its_timeout() -> None:
    p = pool(ping_interval=30.0, ping_timeout=10.0)
    p.want(A, "h", 1, 0.0, pinned=True)
    p.dialed(A, 0.0)
    assert p.tick(29.0) == []
    assert p.tick(30.0) == [Ping(A)]
    assert p.tick(35.0) == []  # one ping outstanding at a time
    p.activity(A, 36.0)  # the answer
    assert p.tick(40.0) == []
    assert p.tick(66.0) == [Ping(A)]
    actions = p.tick(76.0)
    assert isinstance(actions[0], Close) and "ping" in actions[0].reason
    assert p.peers[A].state is State.BACKOFF


def test_inbound_beyond_the_cap_evicts_the_least_active_unpinned_link() -> None:
    p = pool(max_links=2)
    p.want(A, "h", 1, 0.0, pinned=True)
    p.dialed(A, 0.0)
    p.inbound(B, "h", 2, 1.0)
    actions = p.inbound(C, "h", 3, 2.0)
    assert actions[0] == Close(B, "at the link limit") and p.is_up(C) and p.is_up(A)
    # Now every other link is pinned or newer: with A and C pinned, a newcomer is refused.
    p.want(C, "h", 3, 3.0, pinned=True)
    assert p.inbound(B, "h", 2, 4.0) == [Close(B, "at the link limit")]


def test_duplicate_inbound_is_closed() -> None:
    p = pool()
    p.inbound(A, "h", 1, 0.0)
    assert p.inbound(A, "h", 1, 1.0) == [Close(A, "duplicate link")]


def test_reliability_from_answers_and_failures() -> None:
    p = pool()
    p.inbound(A, "h", 1, 0.0)
    for _ in range(6):
        p.answered(A, 1.0)
    p.failed(A)
    assert p.peers[A].reliability == (6 + 1) / (7 + 2)


ADDRS = [bytes([i]) * 20 for i in range(1, 7)]
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(
            ["want", "pin", "dialed", "dial_failed", "inbound", "closed", "tick", "done", "answered"]
        ),
        st.sampled_from(ADDRS),
        st.floats(0, 50),
    ),
    max_size=80,
)


@given(EVENTS, st.integers(1, 4), st.integers(1, 3))
@settings(max_examples=300, deadline=None)
def test_invariants_under_generated_events(
    events: list[tuple[str, bytes, float]], cap: int, dial_cap: int
) -> None:
    p = pool(max_links=cap, max_dials=dial_cap)
    now = 0.0
    for name, addr, dt in events:
        now += dt
        before = {a: peer.state for a, peer in p.peers.items()}
        if name == "want":
            actions = p.want(addr, "h", 1, now)
        elif name == "pin":
            actions = p.want(addr, "h", 1, now, pinned=True)
        elif name == "dialed":
            actions = p.dialed(addr, now)
        elif name == "dial_failed":
            actions = p.dial_failed(addr, now)
        elif name == "inbound":
            actions = p.inbound(addr, "h", 1, now)
        elif name == "closed":
            actions = p.closed(addr, now)
        elif name == "done":
            p.done_with(addr)
            actions = []
        elif name == "answered":
            actions = p.answered(addr, now)
        else:
            actions = p.tick(now)
        assert sum(1 for peer in p.peers.values() if peer.state is State.UP) <= cap
        assert sum(1 for peer in p.peers.values() if peer.state is State.DIALING) <= dial_cap
        for action in actions:
            if isinstance(action, Dial):  # a dial is only ever asked for a peer that was not busy
                assert before.get(action.address) not in (State.UP, State.DIALING)
                assert p.peers[action.address].state is State.DIALING
        for peer in p.peers.values():
            assert 0 < peer.reliability < 1
            if peer.state is State.BACKOFF:
                assert peer.next_attempt <= now + p.config.backoff_max


def test_a_wanted_link_beyond_the_cap_replaces_the_least_recently_used_one() -> None:
    p = pool(max_links=2)
    p.want(A, "h", 1, 0.0, pinned=True)
    p.dialed(A, 0.0)
    p.want(B, "h", 2, 1.0)
    p.dialed(B, 1.0)
    assert p.want(C, "h", 3, 2.0) == [Dial(C, "h", 3)]  # a dial takes no link: nothing closed yet
    actions = p.dialed(C, 2.2)  # up: now the least recently used link makes room
    assert actions == [Close(B, "at the link limit: least recently used"), Seen(C, True, 0.5)]
    p.closed(B, 2.3)
    assert B not in p.peers  # no backoff for a link closed to make room: it may be dialled again
    assert p.want(B, "h", 2, 3.0) == [Dial(B, "h", 2)]
    assert p.dialed(B, 3.1)[0] == Close(C, "at the link limit: least recently used")


def test_a_dial_completing_when_every_link_is_pinned_is_refused() -> None:
    p = pool(max_links=1)
    p.want(A, "h", 1, 0.0, pinned=True)
    p.dialed(A, 0.0)
    assert p.want(B, "h", 2, 1.0) == [Dial(B, "h", 2)]
    assert p.dialed(B, 1.1) == [Close(B, "at the link limit")]
    assert p.peers[B].state is State.BACKOFF and p.is_up(A)


def test_dials_in_progress_have_a_cap_of_their_own() -> None:
    # Black-holed contacts hold dial slots, never links: an inbound peer still gets a link, and a
    # wanted peer waits for a slot (dialled by the tick that finds one free).
    p = pool(max_links=4, max_dials=2)
    assert p.want(A, "h", 1, 0.0) == [Dial(A, "h", 1)]
    assert p.want(B, "h", 2, 0.0, pinned=True) == [Dial(B, "h", 2)]
    assert p.want(C, "h", 3, 0.0, pinned=True) == []  # no dial slot
    assert p.peers[C].state is State.WAITING
    assert p.inbound(D, "h", 4, 0.5) == [Seen(D, True, 0.5)]  # links are not taken by the dials
    assert p.tick(1.0) == []  # still no slot
    p.done_with(A)
    # The deadline of a silent contact (its request is over): the slot goes to C at once.
    assert p.dial_failed(A, 5.0) == [Dial(C, "h", 3)]
    p.want(E, "h", 5, 6.0)
    p.done_with(E)  # the request that wanted it gave up: it is not dialled later
    assert p.peers[E].state is State.WAITING
    assert p.dial_failed(B, 7.0) == [Seen(B, False, p.peers[B].reliability)]  # B pinned: history
    assert p.tick(7.5) == [] and E not in p.peers


def test_a_peer_no_longer_wanted_is_not_redialled_and_is_forgotten_after_its_backoff() -> None:
    p = pool(backoff_initial=1.0)
    p.want(A, "h", 1, 0.0)
    p.dial_failed(A, 0.5)
    p.done_with(A)  # the request that wanted it is over
    assert p.peers[A].state is State.BACKOFF
    assert p.want(A, "h", 1, 0.6) == []  # still backing off: a new request fails at once
    p.done_with(A)
    assert not any(isinstance(a, Dial) for a in p.tick(5.0))
    assert A not in p.peers
    assert p.want(A, "h", 1, 5.1) == [Dial(A, "h", 1)]  # wanted again later: dialled afresh


def test_an_unpinned_peer_whose_dial_failed_is_not_redialled_and_is_forgotten_after_its_backoff() -> None:
    # A FIND_NODE answer may name contacts that never answer: one dial each, no peer_history row
    # for them, no redial, and the pool does not keep them.
    p = pool(backoff_initial=1.0, backoff_max=8.0)
    assert p.want(A, "h", 1, 0.0) == [Dial(A, "h", 1)]
    assert p.dial_failed(A, 0.1) == []  # never connected: no Seen
    p.done_with(A)  # the request that wanted it is over
    assert p.want(A, "h", 1, 0.2) == []  # within its backoff: no dial (that request fails)
    p.done_with(A)
    assert p.tick(10.0) == [] and A not in p.peers
    assert p.want(A, "h", 1, 10.1) == [Dial(A, "h", 1)]  # wanted again later: dialled afresh
    # A peer that was up once and closed is not redialled either.
    p.want(B, "h", 2, 0.0)
    p.dialed(B, 0.0)
    p.closed(B, 1.0)
    p.done_with(B)
    assert p.peers[B].state is State.BACKOFF
    assert p.tick(20.0) == [] and B not in p.peers
    # A pinned one (a fleet node) is still redialled, and its failed dials are history.
    p.want(C, "h", 3, 0.0, pinned=True)
    assert p.dial_failed(C, 0.1) == [Seen(C, False, p.peers[C].reliability)]
    assert p.tick(20.0) == [Dial(C, "h", 3)]


def test_a_dial_that_fails_while_the_peer_dialled_us_leaves_the_link_up() -> None:
    # Both dialled at once: the peer's link came up and ours was closed before its hello answer.
    p = pool()
    p.want(A, "h", 1, 0.0, pinned=True)
    p.inbound(A, "h", 1, 0.1)
    assert p.dial_failed(A, 0.2) == []
    assert p.is_up(A) and p.tick(100.0) == [Ping(A)]  # not backing off, not redialled
