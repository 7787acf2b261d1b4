"""The device client's reporting rules, with generated inputs and no network: which notify is the
reason a connection closed, when a refused ticket is tried again, and how a refusal is printed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.crypto import PrivateKey
from chrnode.device.client import DeviceClient
from chrnode.device.tickets import MIN_ADVANCE, TicketAgent
from chrnode.edge import codes
from chrnode.edge.messages import Notify, PingReply
from chrnode.errors import ConnectionClosed, RequestRefused, describe

KEY = PrivateKey.generate()
NOTIFIES = st.builds(
    Notify,
    level=st.sampled_from(["info", "warning", "error"]),
    code=st.sampled_from(list(codes.ERROR_CODES)),
    message=st.text(min_size=1, max_size=40),
)
# What the link hands the client, frame by frame: a notify, port data, or an answer.
EVENTS = st.lists(st.one_of(NOTIFIES, st.just("data"), st.just("answer")), max_size=12)


def _feed(client: DeviceClient, events: list[Any]) -> None:
    for event in events:
        if isinstance(event, Notify):
            client.request_received(event)
        elif event == "data":
            client.data_received(1, b"x")
        else:
            client.answer_received(PingReply(time=0, id=99))


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.booleans())
def test_the_close_reason_is_the_notify_that_was_the_last_frame(events: list[Any], we_closed: bool) -> None:
    async def run() -> None:
        client = DeviceClient(KEY)
        _feed(client, events)
        client._closing = we_closed
        client.connection_lost(None)
        last = events[-1] if events else None
        if isinstance(last, Notify) and not we_closed:
            assert client.closed_reason is not None
            assert (client.closed_reason.code, str(client.closed_reason)) == (last.code, last.message)
        else:
            # A notify followed by more frames was a warning, not a goodbye; our own close has
            # no reason from the node.
            assert client.closed_reason is None
        assert client.notifications == [e for e in events if isinstance(e, Notify)][-100:]

    asyncio.run(run())


class _Recorder:
    """What a TicketAgent needs of its client, recording the sends it starts (no network)."""

    def __init__(self, answers: list[BaseException]) -> None:
        self.answers = answers
        self.bytes = 0
        self.spawned = 0
        self.chain_id, self.node, self.key = 31337, bytes(20), KEY
        self.address = KEY.address

    def traffic(self) -> int:
        return self.bytes

    def spawn(self, coro: Any) -> None:
        self.spawned += 1
        coro.close()

    async def request(self, msg: Any) -> Any:
        raise self.answers.pop(0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, MIN_ADVANCE // 3), max_size=20), st.sampled_from(list(codes.ERROR_CODES)))
def test_a_refused_ticket_is_tried_again_only_after_an_advance_of_traffic(
    steps: list[int], code: str
) -> None:
    client = _Recorder([RequestRefused("no", code)])
    agent = TicketAgent(client, bytes(20), 1000)  # type: ignore[arg-type]
    assert asyncio.run(agent.send()) is None
    assert agent.last_error is not None and agent.last_error.code == code  # type: ignore[attr-defined]
    crossed = False
    for step in steps:
        client.bytes += step
        agent.traffic_changed(client.bytes)
        # Not on the next frame (the spurious second refusal after a ping), only past the advance.
        if client.bytes < MIN_ADVANCE:
            assert client.spawned == 0
        elif not crossed:
            crossed = True
            assert client.spawned == 1


def test_a_ticket_in_flight_when_the_connection_ends_is_not_a_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = _Recorder([ConnectionClosed("the connection to the node is closed")])
    agent = TicketAgent(client, bytes(20), 1000)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, "chrnode.client"):
        assert asyncio.run(agent.send()) is None
    assert agent.last_error is None
    assert all(record.levelno < logging.WARNING for record in caplog.records)


@given(st.text(min_size=1, max_size=60), st.sampled_from(list(codes.ERROR_CODES)))
def test_a_refusal_prints_as_code_then_message(message: str, code: str) -> None:
    assert describe(RequestRefused(message, code)) == f"{code}: {message}"
    assert describe(ConnectionClosed(message, code)) == f"{code}: {message}"
    assert describe(ValueError(message)) == message
