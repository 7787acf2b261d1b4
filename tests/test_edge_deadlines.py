"""A session's deadlines (chrnode/edge/deadlines.py) against their rules, with generated times.
The sessions on real sockets that use them are tested in test_edge_hello.py, test_edge_tickets.py
and test_node_edge.py."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from chrnode.config import Config
from chrnode.edge import codes
from chrnode.edge.deadlines import DeadlineRules, Expired, SessionDeadlines


@dataclass(frozen=True)
class Rules:
    hello_timeout: float = 10.0
    idle_timeout: float = 300.0
    ticket_timeout: float = 30.0
    ticket_request_timeout: float = 15.0
    require_tickets: bool = True


timeouts = st.floats(min_value=0.01, max_value=1000.0)
steps = st.lists(st.floats(min_value=0.0, max_value=50.0), min_size=1, max_size=40)


def authed(rules: DeadlineRules, start: float = 0.0) -> SessionDeadlines:
    deadlines = SessionDeadlines(rules)
    deadlines.connected(start)
    deadlines.authenticated(start)
    return deadlines


def test_the_node_config_is_a_rule_set() -> None:
    config = Config()
    deadlines = SessionDeadlines(config)
    deadlines.connected(100.0)
    assert deadlines.check_presence(100.0 + config.hello_timeout, 0) is None
    assert deadlines.check_presence(100.0 + config.hello_timeout + 0.001, 0) == Expired(
        codes.TIMEOUT, f"no hello within {config.hello_timeout:g} s of the TLS handshake"
    )


@given(timeouts, st.floats(min_value=0.0, max_value=1e6), steps)
def test_hello_is_due_within_hello_timeout(timeout: float, start: float, gaps: list[float]) -> None:
    deadlines = SessionDeadlines(Rules(hello_timeout=timeout))
    deadlines.connected(start)
    now = start
    for gap in gaps:
        now += gap
        expired = deadlines.check_presence(now, traffic=12345)  # bytes before hello do not count
        assert (expired is not None) == (now > start + timeout)
        if expired is not None:
            assert expired.code == codes.TIMEOUT and expired.level == "error"
        assert deadlines.check_tickets(now) is None  # no ticket is due before hello


@given(timeouts, st.lists(st.tuples(st.floats(min_value=0.0, max_value=50.0), st.booleans()), max_size=40))
def test_idle_means_no_byte_moved_for_idle_timeout(timeout: float, checks: list[tuple[float, bool]]) -> None:
    """Activity is what the sweep sees: the byte counter moved since its last look."""
    deadlines = authed(Rules(idle_timeout=timeout, require_tickets=False))
    now, traffic, active_at = 0.0, 0, 0.0
    for gap, moved in checks:
        now += gap
        if moved:
            traffic += 1
            active_at = now
        expired = deadlines.check_presence(now, traffic)
        assert (expired is not None) == (now - active_at > timeout)
        if expired is not None:
            assert (expired.code, expired.level) == (codes.TIMEOUT, "info")


@given(timeouts, st.booleans(), st.one_of(st.none(), st.floats(0.0, 500.0)), steps)
def test_a_ticket_is_due_within_ticket_timeout_of_hello(
    timeout: float, required: bool, accepted_at: float | None, gaps: list[float]
) -> None:
    """Reported once, at the first look after the deadline, unless a ticket came first; without
    require_tickets the deadline lapses silently."""
    deadlines = authed(Rules(ticket_timeout=timeout, require_tickets=required))
    times = list(itertools.accumulate(gaps))
    expected: list[float] = []
    for now in times:
        if accepted_at is not None and now >= accepted_at:
            break
        if now > timeout:
            expected = [now] if required else []
            break
    reported = []
    for now in times:
        if accepted_at is not None and now >= accepted_at:
            deadlines.ticket_accepted()
        expired = deadlines.check_tickets(now)
        if expired is not None:
            assert expired.code == codes.TICKET_REQUIRED and "of hello" in expired.message
            reported.append(now)
    assert reported == expected


@given(timeouts, st.lists(st.sampled_from(["want", "accept", "look"]), max_size=60), steps)
def test_one_ticket_request_at_a_time(timeout: float, events: list[str], gaps: list[float]) -> None:
    """ticket_wanted says "send one" only while no request is pending; a pending request ends
    with a ticket or at its deadline (reported once, with require_tickets)."""
    deadlines = authed(Rules(ticket_timeout=1e9, ticket_request_timeout=timeout))
    now, pending_since = 0.0, None
    for i, event in enumerate(events):
        now += gaps[i % len(gaps)]
        if event == "want":
            assert deadlines.ticket_wanted(now) == (pending_since is None)
            if pending_since is None:
                pending_since = now
        elif event == "accept":
            deadlines.ticket_accepted()
            pending_since = None
        else:
            expired = deadlines.check_tickets(now)
            late = pending_since is not None and now > pending_since + timeout
            assert (expired is not None) == late
            if late:
                assert expired is not None and "of the request" in expired.message
                pending_since = None
