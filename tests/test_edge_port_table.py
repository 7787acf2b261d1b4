"""The port table's rules as a state machine (chrnode.edge.ports), in microseconds: generated
sequences of portopens, answers (accept, refuse, ref_in_use, timeout), closes, relays and ends
that leave, against ends that record what the table asks of them (the PortEnd interface)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chrnode.edge import codes
from chrnode.edge.messages import ErrorReply, Message, PortClose, PortOpen, PortOpenReply
from chrnode.edge.ports import MAX_PENDING_OPENS, MAX_PENDING_PER_TARGET, REF_BITS, Port, PortTable

ENDS = 4


class RecordingEnd:
    """A PortEnd that records every message, request and relayed frame."""

    def __init__(self, device: bytes) -> None:
        self.device = device
        self.ports: dict[int, Port] = {}
        self.recent_refs: collections.deque[int] = collections.deque(maxlen=16)
        self.closed = False
        self.sent: list[Message] = []
        self.errors: list[tuple[int | None, str]] = []
        self.warnings: list[str] = []
        self.asked: list[tuple[PortOpen, Callable[[Message | None], None]]] = []
        self.received: list[tuple[int, bytes]] = []
        self.paused: set[int] = set()

    @property
    def closing(self) -> bool:
        return self.closed

    def send(self, msg: Message) -> None:
        if not self.closed:
            self.sent.append(msg)

    def error(self, msg_type: int, request_id: int | None, code: str, message: str) -> None:
        self.errors.append((request_id, code))

    def warn(self, code: str, message: str) -> None:
        self.warnings.append(code)

    def request(
        self, build: Callable[[int], Message], on_answer: Callable[[Message | None], None], timeout: float
    ) -> None:
        msg = build(len(self.asked) + 1)
        assert isinstance(msg, PortOpen)
        self.asked.append((msg, on_answer))

    def forward(self, frame: Any, port: Port, source: Any) -> None:
        self.received.append((port.ref, bytes(frame)))

    def pause_port(self, port: Port) -> None:
        self.paused.add(port.ref)

    def resume_port(self, port: Port) -> None:
        self.paused.discard(port.ref)

    def port_closed(self, port: Port) -> None:
        self.paused.discard(port.ref)


class PortTableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = PortTable(open_timeout=1.0)
        self.ends = [RecordingEnd(bytes([i + 1]) * 20) for i in range(ENDS)]
        self.waiting: list[tuple[RecordingEnd, PortOpen, Callable[[Message | None], None]]] = []
        self.accepted_refs: set[int] = set()  # refs a target accepted
        self.next_id = 0

    @rule(opener=st.integers(0, ENDS - 1), to=st.integers(0, ENDS - 1), here=st.booleans(),
          flags=st.sampled_from(["rw", "r", "w", "rws"]))  # fmt: skip
    def open(self, opener: int, to: int, here: bool, flags: str) -> None:
        self.next_id += 1
        o, t = self.ends[opener], self.ends[to]
        msg = PortOpen(port=9000, device=t.device, flags=flags, id=self.next_id)
        before = len(t.asked)
        self.table.open(o, o.device, t if here else None, t.device if here else None, msg, "device")
        for asked, callback in t.asked[before:]:
            self.waiting.append((t, asked, callback))

    @precondition(lambda self: self.waiting)
    @rule(pick=st.integers(0, 10**6), answer=st.sampled_from(["accept", "refuse", "ref_in_use", "timeout"]))
    def answer(self, pick: int, answer: str) -> None:
        target, asked, callback = self.waiting.pop(pick % len(self.waiting))
        assert asked.ref is not None and 0 < asked.ref < 1 << REF_BITS
        before = len(target.asked)
        if answer == "accept":
            self.accepted_refs.add(asked.ref)
            callback(PortOpenReply(id=asked.id))
        elif answer == "timeout":
            callback(None)
        else:
            code = codes.REF_IN_USE if answer == "ref_in_use" else codes.REFUSED
            callback(ErrorReply(0x03, code, "no", asked.id))
        for again, again_callback in target.asked[before:]:  # ref_in_use: asked again, new ref
            assert again.ref != asked.ref
            self.waiting.append((target, again, again_callback))

    @rule(end=st.integers(0, ENDS - 1), pick=st.integers(0, 10**6))
    def close(self, end: int, pick: int) -> None:
        e = self.ends[end]
        if e.ports:
            ref = sorted(e.ports)[pick % len(e.ports)]
            assert self.table.close(e, ref)
            assert ref not in e.ports
        else:
            assert not self.table.close(e, pick)

    @rule(end=st.integers(0, ENDS - 1), pick=st.integers(0, 10**6))
    def relay(self, end: int, pick: int) -> None:
        e = self.ends[end]
        if not e.ports:
            return
        ref = sorted(e.ports)[pick % len(e.ports)]
        port = e.ports[ref]
        other = port.other(e)
        before = len(other.received)
        self.table.relay(e, ref, b"frame")
        allowed = ("w" if e is port.opener else "r") in port.flags
        assert len(other.received) == before + (1 if allowed else 0)

    @rule(end=st.integers(0, ENDS - 1))
    def leave(self, end: int) -> None:
        e = self.ends[end]
        if e.closed:
            return
        e.closed = True
        self.table.end_closed(e)
        # what a session does when its connection is lost: its unanswered requests fail
        for item in [w for w in self.waiting if w[0] is e]:
            self.waiting.remove(item)
            item[2](None)
        self.ends[end] = RecordingEnd(e.device)  # the device reconnects as a new end

    @invariant()
    def ports_are_consistent(self) -> None:
        seen: dict[int, Port] = {}
        for e in self.ends:
            for ref, port in e.ports.items():
                assert port.ref == ref and 0 < ref < 1 << REF_BITS
                assert seen.setdefault(ref, port) is port  # one port per ref on this node
                other = port.other(e)
                assert other.ports.get(ref) is port and not other.closed
                assert ref in self.accepted_refs  # consent: the target accepted this ref
        assert self.table.count == len(seen)

    @invariant()
    def refs_come_only_from_accepted_answers(self) -> None:
        for e in self.ends:
            for msg in e.sent:
                if isinstance(msg, PortOpenReply):
                    assert msg.ref in self.accepted_refs

    @invariant()
    def pending_counts_match_and_stay_bounded(self) -> None:
        for e in self.ends:
            as_opener, on_target = self.table.pending(e)
            assert 0 <= as_opener <= MAX_PENDING_OPENS and 0 <= on_target <= MAX_PENDING_PER_TARGET
            assert on_target == sum(1 for t, _, _ in self.waiting if t is e)


PortTableMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
test_port_table_rules = PortTableMachine.TestCase


def test_closing_every_end_leaves_nothing_behind() -> None:
    table = PortTable(open_timeout=1.0)
    ends = [RecordingEnd(bytes([i + 1]) * 20) for i in range(3)]
    for opener in ends:
        for target in ends:
            if opener is not target:
                table.open(
                    opener,
                    opener.device,
                    target,
                    target.device,
                    PortOpen(port=1, device=target.device, id=1),
                    "d",
                )
    for target in ends:
        for msg, callback in target.asked:
            callback(PortOpenReply(id=msg.id))
    assert table.count == 6
    for end in ends:
        end.closed = True
        table.end_closed(end)
    assert table.count == 0 and all(not end.ports for end in ends)
    assert all(table.pending(end) == (0, 0) for end in ends)
    assert not table._refs
    assert all(isinstance(m, PortClose | PortOpenReply) for end in ends for m in end.sent)


def test_pending_opens_are_bounded_per_opener_and_per_target() -> None:
    table = PortTable(open_timeout=1.0)
    opener, target = RecordingEnd(b"\x01" * 20), RecordingEnd(b"\x02" * 20)
    for i in range(MAX_PENDING_OPENS + 5):
        table.open(
            opener, opener.device, target, target.device, PortOpen(port=1, device=target.device, id=i), "d"
        )
    assert len(target.asked) == MAX_PENDING_OPENS
    assert [code for _id, code in opener.errors] == [codes.BUSY] * 5
    others = [RecordingEnd(bytes([i + 3]) * 20) for i in range(3)]
    for other in others:  # the target is full: openers that never asked anything are refused too
        table.open(
            other, other.device, target, target.device, PortOpen(port=1, device=target.device, id=1), "d"
        )
        assert other.errors == [(1, codes.BUSY)]
    _msg, callback = target.asked[0]
    callback(PortOpenReply(id=_msg.id))  # one answer frees one slot on both counters
    assert table.pending(opener) == (MAX_PENDING_OPENS - 1, 0)
    assert table.pending(target) == (0, MAX_PENDING_OPENS - 1)
    table.open(
        others[0], others[0].device, target, target.device, PortOpen(port=1, device=target.device, id=2), "d"
    )
    assert len(target.asked) == MAX_PENDING_OPENS + 1
