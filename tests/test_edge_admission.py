"""The admission policy (chrnode.edge.admission): generated event sequences against a naive model."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.edge.admission import Admission, AdmissionLimits, Admit, Refuse, subnet_of

# A small pool of addresses in few subnets, so caps are hit often; v4, v6 and v4-mapped v6.
IPS = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.1.1",
    "192.168.7.9",
    "::ffff:10.0.0.1",
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8:0:1::1",
]


@dataclass
class _M:
    conn: int
    address: tuple[int, int]
    subnet: tuple[int, int]
    deadline: float | None
    spoke: bool
    order: int  # when it (last) entered its tier of the pending set


class Model:
    """The policy written as plainly as possible: scans instead of indexes."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.conns: dict[int, _M] = {}
        self.order = 0

    def _victim(self, pred: Any) -> _M | None:
        pending = [m for m in self.conns.values() if m.deadline is not None and pred(m)]
        for spoke in (False, True):
            tier = sorted((m for m in pending if m.spoke is spoke), key=lambda m: m.order)
            if tier:
                return tier[0]
        return None

    def _next(self) -> int:
        self.order += 1
        return self.order

    def accept(self, conn: int, ip: str, now: float, spoke: bool) -> tuple[str, tuple[int, ...]]:
        address, subnet = subnet_of(ip)
        lim = self.limits
        groups = [
            ("address", lim.per_address, lambda m: m.address == address),
            ("subnet", lim.per_subnet, lambda m: m.subnet == subnet),
            ("total", lim.max_connections, lambda m: True),
        ]
        shed: tuple[int, ...] = ()
        for name, limit, pred in groups:
            if limit and sum(1 for m in self.conns.values() if pred(m)) >= limit:
                victim = self._victim(pred)
                if victim is None:
                    return ("refuse:" + name, ())
                shed = (victim.conn,)
                del self.conns[victim.conn]
                break
        self.conns[conn] = _M(conn, address, subnet, now + lim.pending_timeout, spoke, self._next())
        return ("admit", shed)

    def progressed(self, conn: int) -> None:
        m = self.conns.get(conn)
        if m is not None and not m.spoke:
            m.spoke = True
            m.order = self._next()

    def authenticated(self, conn: int) -> None:
        if conn in self.conns:
            self.conns[conn].deadline = None

    def pending(self, conn: int, now: float) -> None:
        if conn in self.conns:
            m = self.conns[conn]
            m.deadline, m.order = now + self.limits.pending_timeout, self._next()

    def closed(self, conn: int) -> None:
        self.conns.pop(conn, None)

    def tick(self, now: float) -> set[int]:
        gone = {m.conn for m in self.conns.values() if m.deadline is not None and m.deadline <= now}
        for conn in gone:
            del self.conns[conn]
        return gone


limits_st = st.builds(
    AdmissionLimits,
    max_connections=st.integers(1, 12),
    per_address=st.integers(0, 5),
    per_subnet=st.integers(0, 8),
    pending_timeout=st.sampled_from([0.5, 1.0, 5.0]),
)
event_st = st.one_of(
    st.tuples(st.just("accept"), st.tuples(st.sampled_from(IPS), st.booleans())),
    st.tuples(st.just("progress"), st.integers(0, 60)),
    st.tuples(st.just("auth"), st.integers(0, 60)),
    st.tuples(st.just("pending"), st.integers(0, 60)),
    st.tuples(st.just("close"), st.integers(0, 60)),
    st.tuples(st.just("tick"), st.floats(0.0, 2.0)),
)


@settings(max_examples=400, deadline=None)
@given(limits_st, st.lists(event_st, max_size=80))
def test_policy_matches_the_model_and_keeps_its_caps(limits: AdmissionLimits, events: list) -> None:
    policy, model = Admission(limits), Model(limits)
    now, next_conn = 0.0, 0
    for kind, arg in events:
        if kind == "accept":
            conn, next_conn = next_conn, next_conn + 1
            ip, spoke = arg
            decision = policy.accept(conn, ip, now, spoke=spoke)
            expected = model.accept(conn, ip, now, spoke)
            if isinstance(decision, Admit):
                assert ("admit", decision.shed) == expected
                assert conn in policy and policy.is_pending(conn)
            else:
                assert isinstance(decision, Refuse)
                assert expected == ("refuse:" + decision.cap, ())
                assert conn not in policy
        elif kind == "progress":
            policy.progressed(arg)
            model.progressed(arg)
        elif kind == "auth":
            policy.authenticated(arg)
            model.authenticated(arg)
        elif kind == "pending":
            policy.pending(arg, now)
            model.pending(arg, now)
        elif kind == "close":
            policy.closed(arg)
            model.closed(arg)
        else:
            now += arg
            assert set(policy.tick(now)) == model.tick(now)
        # The caps hold after every event, and the indexes agree with the model.
        assert len(policy) == len(model.conns) <= limits.max_connections
        assert policy.pending_count == sum(1 for m in model.conns.values() if m.deadline is not None)
        for ip in IPS:
            by_address, by_subnet = policy.count_of(ip)
            address, subnet = subnet_of(ip)
            assert by_address == sum(1 for m in model.conns.values() if m.address == address)
            assert by_subnet == sum(1 for m in model.conns.values() if m.subnet == subnet)
            assert not limits.per_address or by_address <= limits.per_address
            assert not limits.per_subnet or by_subnet <= limits.per_subnet


@settings(max_examples=200, deadline=None)
@given(
    st.integers(50, 400),
    st.integers(1, 40),
    st.integers(1, 200),
)
def test_an_honest_device_gets_in_and_stays_under_a_slowloris(
    attackers: int, honest_at: int, after: int
) -> None:
    # Attackers from many addresses across 127.0.0.0/8 never authenticate; an honest device
    # arrives in the middle, authenticates at once, and the flood goes on.
    limits = AdmissionLimits(max_connections=50, per_address=4, per_subnet=16, pending_timeout=5.0)
    policy: Admission[object] = Admission(limits)
    now = 0.0
    honest = "honest"
    for i in range(attackers + after):
        now += 0.001
        if i == honest_at:
            decision = policy.accept(honest, "127.200.0.1", now)
            assert isinstance(decision, Admit), decision
            policy.authenticated(honest)
        ip = str(ipaddress.IPv4Address((127 << 24) + 1 + (i * 7919) % 5000))
        decision = policy.accept(("bad", i), ip, now)
        assert isinstance(decision, Admit)  # there is always a pending one to shed
        assert honest not in decision.shed
    assert honest in policy


def test_silent_connections_are_shed_before_ones_whose_handshake_is_under_way() -> None:
    policy: Admission[str] = Admission(AdmissionLimits(max_connections=3))
    policy.accept("talker", "10.0.0.1", 0.0, spoke=True)
    policy.accept("mute-old", "10.0.0.2", 1.0)
    policy.accept("mute-new", "10.0.0.3", 2.0)
    assert policy.accept("a", "10.0.0.4", 3.0) == Admit("a", ("mute-old",), "total")
    policy.progressed("a")
    assert policy.accept("b", "10.0.0.5", 4.0) == Admit("b", ("mute-new",), "total")
    assert policy.accept("c", "10.0.0.6", 5.0) == Admit("c", ("b",), "total")  # the only silent one
    assert policy.accept("d", "10.0.0.7", 6.0, spoke=True) == Admit("d", ("c",), "total")
    policy.progressed("d")  # already spoken: no change
    assert policy.accept("e", "10.0.0.8", 7.0) == Admit("e", ("talker",), "total")


def test_authenticated_connections_fill_a_group_and_the_newcomer_is_refused() -> None:
    policy = Admission(AdmissionLimits(max_connections=10, per_address=2))
    for conn in (1, 2):
        assert isinstance(policy.accept(conn, "10.1.1.1", 0.0), Admit)
        policy.authenticated(conn)
    assert policy.accept(3, "10.1.1.1", 0.0) == Refuse(3, "address", 2)
    assert isinstance(policy.accept(4, "10.1.1.2", 0.0), Admit)  # another address is not affected
    policy.closed(1)
    assert isinstance(policy.accept(5, "10.1.1.1", 0.0), Admit)


def test_deadlines_expire_only_pending_connections_oldest_first() -> None:
    policy = Admission(AdmissionLimits(max_connections=10, pending_timeout=5.0))
    for conn in range(4):
        policy.accept(conn, "10.0.0.1", float(conn))
    policy.authenticated(1)
    policy.pending(2, 3.5)  # re-armed: its deadline is now 8.5
    assert policy.tick(4.9) == []
    assert policy.tick(6.0) == [0]
    assert policy.tick(8.0) == [3]
    assert policy.tick(9.0) == [2]
    assert len(policy) == 1 and not policy.is_pending(1)
    policy.closed(0)  # already expired: a no-op
    assert len(policy) == 1


@pytest.mark.parametrize(
    ("ip", "same"),
    [("10.0.0.200", True), ("10.0.1.1", False), ("::ffff:10.0.0.9", True), ("fe80::1%eth0", False)],
)
def test_subnets_are_slash_24_for_ipv4_and_mapped_addresses(ip: str, same: bool) -> None:
    assert (subnet_of(ip)[1] == subnet_of("10.0.0.1")[1]) is same


def test_ipv6_subnets_are_slash_64() -> None:
    assert subnet_of("2001:db8::1")[1] == subnet_of("2001:db8::ffff:1")[1]
    assert subnet_of("2001:db8::1")[1] != subnet_of("2001:db8:0:1::1")[1]
    assert subnet_of("2001:db8::1")[0] != subnet_of("2001:db8::2")[0]


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="pending_timeout"):
        AdmissionLimits(max_connections=1, pending_timeout=0)
    with pytest.raises(ValueError, match="positive"):
        AdmissionLimits(max_connections=0)


def test_pressure_is_reported_at_most_once_per_interval_with_counts_since_the_last_report() -> None:
    policy: Admission[int] = Admission(AdmissionLimits(max_connections=1, pending_timeout=1.0))
    assert policy.pressure_report(0.0) is None  # nothing happened
    policy.accept(0, "10.0.0.1", 0.0)
    policy.accept(1, "10.0.0.1", 0.0)  # sheds 0
    assert policy.pressure_report(0.0, every=60.0) == (1, 0, 0)
    policy.authenticated(1)
    policy.accept(2, "10.0.0.2", 1.0)  # refused
    policy.closed(1)
    policy.accept(3, "10.0.0.2", 2.0)
    assert policy.tick(10.0) == [3]
    assert policy.pressure_report(30.0, every=60.0) is None  # too soon
    assert policy.pressure_report(61.0, every=60.0) == (0, 1, 1)
    assert policy.pressure_report(200.0, every=60.0) is None  # nothing new
    assert policy.counters() == {"pending": 0, "shed_total": 1, "refused_total": 1, "expired_total": 1}
