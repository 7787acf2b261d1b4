"""Nesting depth and integer ranges are bounded at decode (issue 8 item 5, SPEC 4): pure codec tests
with generated payloads, then the same inputs against a running node, which answers at once and
never hands them to a hook (the actors behind the hooks never see them)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chrnode.crypto import PrivateKey
from chrnode.edge import codes
from chrnode.edge.bounds import MAX_DEPTH, MAX_ITEMS
from chrnode.edge.frame import Frame, peek_request_id
from chrnode.edge.hooks import DefaultHooks
from chrnode.edge.messages import Ping, TicketMsg, decode_payload
from chrnode.errors import RemoteProtocolError
from chrnode.testing.crypto import signed_ticket
from chrnode.testing.edge import TEST_EPOCH, NodeThread

HELLO, TICKET, PING = 0x01, 0x02, 0x06
RESPONSE, ERROR = 0x0001, 0x0002


def nested(depth: int, kind: str) -> bytes:
    """msgpack of ``depth`` nested arrays (or one-key maps) around a 0, written byte by byte
    (msgpack.packb itself refuses to build what an attacker can simply send)."""
    opener = b"\x91" if kind == "array" else b"\x81\xa1k"
    return opener * depth + b"\x00"


def with_id(request_id: int, value: bytes) -> bytes:
    """``{id: request_id, x: value}`` where value is raw msgpack."""
    return b"\x82\xa2id" + msgpack.packb(request_id) + b"\xa1x" + value


def refused(msg_type: int, payload: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as error:
        decode_payload(Frame(msg_type, 0, payload))
    return error.value


# ---- pure codec ----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.sampled_from(["array", "map"]), st.sampled_from([HELLO, TICKET, PING, 0x20]))
def test_nesting_beyond_the_bound_is_bad_payload_never_a_recursion(
    depth: int, kind: str, msg_type: int
) -> None:
    payload = with_id(9, nested(depth, kind))
    if depth + 1 <= MAX_DEPTH:  # the top-level map is one level
        try:
            decode_payload(Frame(msg_type, 0, payload))
        except RemoteProtocolError as exc:  # missing fields of hello/ticket: still a clean refusal
            assert exc.code == codes.BAD_PAYLOAD
        return
    error = refused(msg_type, payload)
    assert error.code == codes.BAD_PAYLOAD
    assert f"deeper than {MAX_DEPTH}" in str(error)
    # msgpack's own stack (1024) decides whether the id could still be read
    assert error.request_id in (9, None)
    if depth < 1000:
        assert error.request_id == 9


def test_the_id_of_a_deep_payload_is_answered_and_peek_never_recurses() -> None:
    assert refused(PING, with_id(33, nested(1000, "array"))).request_id == 33
    assert peek_request_id(with_id(33, nested(1000, "array"))) is None
    assert peek_request_id(with_id(33, nested(3, "array"))) == 33


@given(
    st.recursive(
        st.integers(-10, 10) | st.binary(max_size=4),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
        max_leaves=40,
    )
)
def test_generated_shallow_values_in_unknown_keys_are_ignored(value: Any) -> None:
    payload = msgpack.packb({"id": 4, "extra": value}, use_bin_type=True)
    assert decode_payload(Frame(PING, 0, payload)) == Ping(id=4)


def test_msgpack_limits_refuse_ext_types_and_huge_containers() -> None:
    timestamp = msgpack.packb({"id": 1, "t": msgpack.Timestamp(1, 0)})
    assert refused(PING, timestamp).code == codes.BAD_PAYLOAD
    big_map = msgpack.packb({"id": 1, **{f"k{i}": 0 for i in range(MAX_ITEMS + 1)}})
    assert refused(PING, big_map).code == codes.BAD_PAYLOAD
    big_list = msgpack.packb({"id": 1, "x": [0] * (MAX_ITEMS + 1)})
    assert refused(PING, big_list).code == codes.BAD_PAYLOAD


TICKET_INTS = ("chain_id", "epoch", "total_connections", "total_bytes")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(TICKET_INTS), st.integers(2**63, 2**64 - 1) | st.integers(-(2**63), -1))
def test_ticket_integers_outside_what_is_stored_are_bad_payload(name: str, value: int) -> None:
    wire = signed_ticket(PrivateKey.generate(), bytes(20)).to_wire()
    wire[name] = value
    error = refused(TICKET, msgpack.packb({"id": 3, "ticket": wire}, use_bin_type=True))
    assert error.code == codes.BAD_PAYLOAD and error.request_id == 3
    assert f"ticket.{name}" in str(error)


@given(st.sampled_from(TICKET_INTS), st.integers(0, 2**63 - 1))
def test_ticket_integers_in_range_decode(name: str, value: int) -> None:
    wire = signed_ticket(PrivateKey.generate(), bytes(20)).to_wire()
    wire[name] = value
    msg = decode_payload(Frame(TICKET, 0, msgpack.packb({"id": 3, "ticket": wire}, use_bin_type=True)))
    assert isinstance(msg, TicketMsg) and getattr(msg.ticket, name) == value


# ---- against a running node ----------------------------------------------------------------------


class WatchedHooks(DefaultHooks):
    """DefaultHooks that record every ticket that reached them (what an actor would see)."""

    def __init__(self) -> None:
        super().__init__(epoch=TEST_EPOCH)
        self.seen: list[tuple[str, int]] = []

    async def load_best_ticket(self, device: bytes, fleet: bytes, epoch: int) -> Any:
        self.seen.append(("load", epoch))
        return await super().load_best_ticket(device, fleet, epoch)

    async def fleet_check(self, fleet: bytes, node: bytes, device: bytes) -> tuple[bool, bool]:
        self.seen.append(("fleet", 0))
        return await super().fleet_check(fleet, node, device)


@pytest.fixture
def watched(tmp_path: Path):  # type: ignore[no-untyped-def]
    hooks = WatchedHooks()
    node = NodeThread(tmp_path, hooks, conn_rate_per_ip=10_000.0)
    node.hooks = hooks  # type: ignore[attr-defined]
    yield node
    node.stop()


def _answer(client: Any, msg_type: int, request_id: int) -> dict[str, Any]:
    while True:
        got_type, flags, payload = client.recv()
        if got_type == msg_type and flags & RESPONSE and payload.get("id") == request_id:
            assert flags & ERROR, payload
            return dict(payload)


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("chrnode")
    ]
    assert not bad, bad


@pytest.mark.parametrize("depth", [500, 1000, 1023, 1100])
def test_a_deeply_nested_ping_gets_bad_payload_at_once(
    watched: NodeThread, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    with watched.raw() as client:
        client.hello(PrivateKey.generate(), watched.node.address)
        payload = with_id(7, nested(depth, "array"))
        client.send_raw(bytes([2, PING, 0, 0]) + len(payload).to_bytes(4, "big") + payload)
        got_type, flags, answer = client.recv()
        assert (got_type, flags & ERROR, answer["code"]) == (PING, ERROR, codes.BAD_PAYLOAD), answer
        if depth < 1000:
            assert answer["id"] == 7
        else:  # beyond msgpack's own stack the id cannot be read: nil (SPEC 4)
            assert answer["id"] in (7, None)
        client.send(PING, {"id": 8})  # the connection is still served
        got_type, flags, answer = client.recv()
        assert (got_type, flags, answer["id"]) == (PING, RESPONSE, 8) and answer["time"] > 0
    _no_errors_logged(caplog)


@pytest.mark.parametrize("epoch", [2**63, 2**64 - 1])
def test_a_ticket_with_an_unstorable_epoch_is_refused_at_once_and_reaches_no_hook(
    watched: NodeThread, epoch: int, caplog: pytest.LogCaptureFixture
) -> None:
    key = PrivateKey.generate()
    with watched.raw() as client:
        client.hello(key, watched.node.address)
        wire = signed_ticket(key, watched.node.address, epoch=epoch).to_wire()
        started = time.monotonic()
        client.send(TICKET, {"id": 5, "ticket": wire})
        answer = _answer(client, TICKET, 5)
        assert answer["code"] == codes.BAD_PAYLOAD and "ticket.epoch" in answer["message"]
        assert time.monotonic() - started < 2.0
    assert watched.hooks.seen == []  # type: ignore[attr-defined]
    _no_errors_logged(caplog)


def test_a_ticket_of_a_far_epoch_in_range_never_reaches_the_store(watched: NodeThread) -> None:
    key = PrivateKey.generate()
    with watched.raw() as client:
        client.hello(key, watched.node.address)
        wire = signed_ticket(key, watched.node.address, epoch=2**63 - 1).to_wire()
        client.send(TICKET, {"id": 6, "ticket": wire})
        assert _answer(client, TICKET, 6)["code"] == codes.EPOCH_TOO_HIGH
    assert watched.hooks.seen == []  # type: ignore[attr-defined]


def test_generated_nested_and_out_of_range_payloads_against_the_node(
    watched: NodeThread, caplog: pytest.LogCaptureFixture
) -> None:
    key = PrivateKey.generate()
    next_id = [100]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.one_of(
            st.tuples(st.just("nest"), st.integers(MAX_DEPTH, 1020), st.sampled_from(["array", "map"])),
            st.tuples(st.just("int"), st.sampled_from(TICKET_INTS), st.integers(2**63, 2**64 - 1)),
        )
    )
    def check(case: tuple[str, Any, Any]) -> None:
        next_id[0] += 1
        rid = next_id[0]
        # a connection per example: each refusal counts a fault, and ten close a connection
        with watched.raw() as client:
            client.hello(key, watched.node.address)
            if case[0] == "nest":
                payload = with_id(rid, nested(case[1], case[2]))
                client.send_raw(bytes([2, PING, 0, 0]) + len(payload).to_bytes(4, "big") + payload)
                assert _answer(client, PING, rid)["code"] == codes.BAD_PAYLOAD
            else:
                wire = signed_ticket(key, watched.node.address, epoch=TEST_EPOCH).to_wire()
                wire[case[1]] = case[2]
                client.send(TICKET, {"id": rid, "ticket": wire})
                assert _answer(client, TICKET, rid)["code"] == codes.BAD_PAYLOAD

    check()
    assert watched.hooks.seen == []  # type: ignore[attr-defined]
    _no_errors_logged(caplog)
