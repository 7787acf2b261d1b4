"""The channel rules (chrnode.edge.channels), pure: generated join/leave/answer/close/flow sequences."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.edge import codes
from chrnode.edge.channels import (
    Accept,
    Action,
    Answer,
    Answered,
    Ask,
    Channels,
    Close,
    CloseTarget,
    Event,
    Join,
    Leave,
    Limits,
    Paused,
    Plain,
    Refuse,
    Resumed,
    Sent,
    TargetClosed,
    Tick,
)

KEYS = ("a", "b")
LIMITS = Limits(max_members=4, max_lag=1000, slow_timeout=5.0)

keys, members = st.sampled_from(KEYS), st.integers(0, 5)
joins = st.builds(Join, keys, members, st.sampled_from(["r", "rs", "rs", "rws", "ws"]))
answers = st.sampled_from(
    [Answer.SHARED, Answer.SHARED, Answer.SHARED, Answer.PLAIN, Answer.REFUSED, Answer.TIMEOUT]
)
events = st.one_of(
    joins,
    joins,
    st.builds(Answered, keys, answers),
    st.builds(Answered, keys, answers),
    st.builds(Leave, keys, members),
    st.builds(TargetClosed, keys),
    st.builds(Paused, keys, members, st.floats(0, 20)),
    st.builds(Resumed, keys, members),
    st.builds(Sent, keys, members, st.integers(0, 600)),
    st.builds(Tick, st.floats(0, 40)),
)


class Model:
    """What the adapter would see: the fate of every member, checked after each event."""

    def __init__(self) -> None:
        self.book = Channels(LIMITS)
        self.asked: dict[object, object] = {}  # key -> member being asked
        self.joined: set[tuple[object, object]] = set()  # (key, member) waiting or asked
        self.members: dict[object, set[object]] = {k: set() for k in KEYS}
        self.owner_flags: dict[tuple[object, object], str] = {}
        self.flags: dict[tuple[object, object], str] = {}
        self.target_open: dict[object, bool] = dict.fromkeys(KEYS, False)
        self.fresh = 0
        self.latest: dict[object, object] = {}  # generated number -> the member it names now

    def name(self, event: Event) -> Event:
        member = getattr(event, "member", None)
        if member is None or isinstance(event, Join):
            return event
        return type(event)(
            *[
                self.latest.get(member, member) if f == "member" else getattr(event, f)
                for f in event.__slots__
            ]
        )  # type: ignore[union-attr]

    def step(self, event: Event) -> list[Action]:
        event = self.name(event)
        if isinstance(event, Join):
            # Every portopen is a new member to the adapter: a repeated number is a fresh one.
            self.fresh += 100
            event = Join(event.key, self.fresh + event.member, event.flags)  # type: ignore[operator]
            self.latest[event.member % 100] = event.member  # type: ignore[operator]
            self.joined.add((event.key, event.member))
            self.flags[(event.key, event.member)] = event.flags
        if isinstance(event, Answered) and event.key not in self.asked:
            return []  # no portopen in flight: the adapter never reports an answer then
        if isinstance(event, Leave) and (event.key, event.member) not in self.joined:
            if event.member not in self.members[event.key]:
                return []
        if isinstance(event, Leave) and self.asked.get(event.key) == event.member:
            return []  # an opener being asked leaves through the target's answer, not Leave
        if isinstance(event, TargetClosed) and not self.target_open[event.key]:
            return []
        before = {k: set(v) for k, v in self.members.items()}
        actions = self.book.handle(event)
        answered_member = self.asked.pop(event.key) if isinstance(event, Answered) else None
        if isinstance(event, Leave):
            self.joined.discard((event.key, event.member))
            self.members[event.key].discard(event.member)
        if isinstance(event, Answered) and event.answer in (Answer.REFUSED, Answer.TIMEOUT):
            self.joined.discard((event.key, answered_member))
        if isinstance(event, TargetClosed):
            self.target_open[event.key] = False
            self.members[event.key] = set()
        self.check(event, actions, before, answered_member)
        return actions

    def check(
        self, event: Event, actions: list[Action], before: dict[object, set[object]], asked: object
    ) -> None:
        settled: Counter[tuple[object, object]] = Counter()
        for action in actions:
            pair = (action.key, getattr(action, "member", None))
            if isinstance(action, Ask):
                assert action.key not in self.asked, "one portopen in flight per channel"
                assert pair in self.joined
                self.asked[action.key] = action.member
            elif isinstance(action, Accept):
                assert pair in self.joined, "only an opener that asked gets in"
                assert action.member not in self.members[action.key]
                self.joined.discard(pair)
                self.members[action.key].add(action.member)
                if action.member == asked:
                    assert isinstance(event, Answered) and event.answer is Answer.SHARED
                    self.target_open[action.key] = True
                else:
                    assert "w" not in self.flags[pair], "a joiner never writes"
                settled[pair] += 1
            elif isinstance(action, Plain):
                assert action.member == asked and isinstance(event, Answered) and event.answer is Answer.PLAIN
                self.joined.discard(pair)
                settled[pair] += 1
            elif isinstance(action, Refuse):
                assert pair in self.joined and action.code in codes.ERROR_CODES and action.message
                self.joined.discard(pair)
                settled[pair] += 1
            elif isinstance(action, Close):
                assert action.member in before[action.key] or isinstance(event, TargetClosed)
                self.members[action.key].discard(action.member)
                if action.code is not None:
                    assert action.code == codes.TOO_SLOW and isinstance(event, (Sent, Tick))
            elif isinstance(action, CloseTarget):
                assert self.target_open[action.key] and not self.members[action.key]
                assert not isinstance(event, TargetClosed)
                self.target_open[action.key] = False
        assert all(n == 1 for n in settled.values()), "one answer per opener"
        for key in KEYS:
            assert set(self.book.members(key)) == self.members[key]
            assert len(self.members[key]) <= LIMITS.max_members
            assert set(self.book.readers(key)) == {
                m for m in self.members[key] if "r" in self.flags[(key, m)]
            }
            writer = self.book.writer(key)
            if writer is not None:
                assert writer == self.book.owner(key) and "w" in self.flags[(key, writer)]
            if self.members[key]:
                assert self.target_open[key], "members only while the target's port is open"


@settings(max_examples=400, deadline=None)
@given(st.lists(events, max_size=60))
def test_generated_sequences_keep_the_rules(sequence: list[Event]) -> None:
    model = Model()
    for event in sequence:
        model.step(event)
    # Whatever happened, the target's leaving closes everyone and leaves no channel behind.
    for key in KEYS:
        if model.target_open[key]:
            model.step(TargetClosed(key))
        if key in model.asked:
            model.step(Answered(key, Answer.TIMEOUT))
        assert not model.book.members(key)


def test_first_opener_is_asked_later_ones_join_and_the_last_leaving_closes_the_target() -> None:
    book = Channels(LIMITS)
    assert book.handle(Join("k", 1, "rws")) == [Ask("k", 1)]
    assert book.handle(Join("k", 2, "rs")) == []  # waits for the answer
    assert book.handle(Answered("k", Answer.SHARED)) == [Accept("k", 1), Accept("k", 2)]
    assert book.handle(Join("k", 3, "r")) == [Accept("k", 3)]
    assert book.readers("k") == (1, 2, 3) and book.writer("k") == 1
    refused = book.handle(Join("k", 4, "rws"))
    assert [(type(a), a.code) for a in refused if isinstance(a, Refuse)] == [(Refuse, codes.FORBIDDEN)]
    assert book.handle(Leave("k", 1)) == []  # the owner leaves: the others still read
    assert book.writer("k") is None and book.readers("k") == (2, 3)
    assert book.handle(Leave("k", 2)) == []
    assert book.handle(Leave("k", 3)) == [CloseTarget("k")]
    assert len(book) == 0


def test_a_plain_answer_or_a_refusal_asks_the_next_opener_and_a_timeout_fails_all() -> None:
    book = Channels(LIMITS)
    book.handle(Join("k", 1, "rs"))
    book.handle(Join("k", 2, "rs"))
    book.handle(Join("k", 3, "rs"))
    assert book.handle(Answered("k", Answer.PLAIN)) == [Plain("k", 1), Ask("k", 2)]
    assert book.handle(Answered("k", Answer.REFUSED)) == [Ask("k", 3)]
    book.handle(Join("k", 4, "rs"))
    actions = book.handle(Answered("k", Answer.TIMEOUT))
    assert [(a.member, a.code) for a in actions if isinstance(a, Refuse)] == [(4, codes.TIMEOUT)]
    assert len(book) == 0


def test_cap_and_target_close() -> None:
    book = Channels(Limits(max_members=2))
    book.handle(Join("k", 1, "rs"))
    book.handle(Answered("k", Answer.SHARED))
    assert book.handle(Join("k", 2, "rs")) == [Accept("k", 2)]
    (busy,) = book.handle(Join("k", 3, "rs"))
    assert isinstance(busy, Refuse) and busy.code == codes.BUSY and "2 members" in busy.message
    assert book.handle(TargetClosed("k")) == [Close("k", 1), Close("k", 2)]
    assert book.handle(Leave("k", 1)) == []  # late: nothing left to do


def test_a_slow_member_is_closed_by_lag_or_by_time_and_the_others_stay() -> None:
    book = Channels(LIMITS)
    book.handle(Join("k", 1, "rs"))
    book.handle(Answered("k", Answer.SHARED))
    book.handle(Join("k", 2, "rs"))
    book.handle(Join("k", 3, "rs"))
    book.handle(Paused("k", 2, 1.0))
    assert book.handle(Sent("k", 2, 600)) == []
    assert book.next_deadline() == 6.0
    (close,) = book.handle(Sent("k", 2, 600))
    assert close == Close("k", 2, codes.TOO_SLOW, close.message) and "1000 bytes" in close.message
    book.handle(Paused("k", 3, 2.0))
    book.handle(Resumed("k", 3))  # caught up: the clock starts again at the next pause
    book.handle(Paused("k", 3, 4.0))
    assert book.handle(Tick(8.9)) == []
    (late,) = book.handle(Tick(9.0))
    assert late.member == 3 and late.code == codes.TOO_SLOW  # type: ignore[union-attr]
    assert book.readers("k") == (1,) and book.slow_closed == 2
