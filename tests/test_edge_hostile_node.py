"""The hostile-input findings of issue 8 items 3 and 5 against a real `chr-node start` (actors,
TicketStore, SQLite), from raw TLS clients as an attacker writes them: the shared-port takeover,
the portopen spam, nested payloads and out-of-range integers on the edge port and over JSON-RPC."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chrnode.crypto import PrivateKey, parse_address
from chrnode.testing.crypto import signed_ticket
from chrnode.testing.edge import RawFrameClient
from chrnode.testing.node import NodeProcess

pytestmark = pytest.mark.slow

TICKET, PORTOPEN, PORTSEND, PING = 0x02, 0x03, 0x04, 0x06
RESPONSE, ERROR = 0x0001, 0x0002


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, int, bytes]]:
    proc = NodeProcess(tmp_path_factory.mktemp("hostile") / "data", CHR_MAX_CONNECTIONS="200")
    proc.start()
    try:
        info = proc.rpc("chr_node_info")
        yield proc, int(info["ports"]["edge2"][0]), parse_address(info["address"])
    finally:
        proc.stop()


def _device(port: int, address: bytes, key: PrivateKey | None = None) -> tuple[RawFrameClient, PrivateKey]:
    key = key or PrivateKey.generate()
    client = RawFrameClient("127.0.0.1", port, timeout=10.0)
    client.hello(key, address)
    return client, key


def _next(
    client: RawFrameClient, msg_type: int, response: bool, timeout: float = 10.0
) -> dict[str, Any] | None:
    """The next frame of ``msg_type`` (answer or request) within ``timeout``, or None."""
    client.sock.settimeout(timeout)
    try:
        while True:
            got_type, flags, payload = client.recv()
            if got_type == msg_type and bool(flags & RESPONSE) == response:
                return dict(payload)
    except (TimeoutError, ssl.SSLError):
        return None


def test_a_shared_port_cannot_be_taken_over(node: tuple[NodeProcess, int, bytes]) -> None:
    _proc, port, address = node
    (a, _), (b, b_key), (c, c_key) = (_device(port, address) for _ in range(3))
    try:
        a.send(PORTOPEN, {"id": 1, "device": b_key.address, "port": 9000, "flags": "rws"})
        asked = _next(b, PORTOPEN, response=False)
        assert asked is not None
        b.send(PORTOPEN, {"id": asked["id"]}, flags=RESPONSE)
        a_ref = _next(a, PORTOPEN, response=True)
        assert a_ref is not None and a_ref["ref"] == asked["ref"]
        c.send(PORTOPEN, {"id": 1, "device": b_key.address, "port": 9000, "flags": "rws"})
        second = _next(b, PORTOPEN, response=False)
        assert second is not None, "the target was not asked about the second opener"
        assert second["device"] == c_key.address and second["ref"] != asked["ref"]
        refusal = {"id": second["id"], "code": "refused", "message": "not you"}
        b.send(PORTOPEN, refusal, flags=RESPONSE | ERROR)
        answer = _next(c, PORTOPEN, response=True)
        assert answer is not None and answer["code"] == "refused" and "ref" not in answer
        b.send(PORTSEND, {"ref": asked["ref"], "data": b"for A only"})
        got = _next(a, PORTSEND, response=False)
        assert got is not None and got["data"] == b"for A only"
        assert _next(c, PORTSEND, response=False, timeout=1.0) is None
    finally:
        for client in (a, b, c):
            client.close()


def test_portopen_spam_is_bounded(node: tuple[NodeProcess, int, bytes]) -> None:
    _proc, port, address = node
    (opener, _), (target, target_key) = _device(port, address), _device(port, address)
    try:
        for i in range(300):
            opener.send(PORTOPEN, {"id": 100 + i, "device": target_key.address, "port": 1})
        forwarded = 0
        while _next(target, PORTOPEN, response=False, timeout=2.0) is not None:
            forwarded += 1
        assert forwarded == 64
        busy = 0
        while (answer := _next(opener, PORTOPEN, response=True, timeout=2.0)) is not None:
            assert answer["code"] == "busy", answer
            busy += 1
        assert busy == 300 - 64
    finally:
        opener.close()
        target.close()


def test_nested_and_out_of_range_payloads_are_refused_at_once(node: tuple[NodeProcess, int, bytes]) -> None:
    proc, port, address = node
    client, key = _device(port, address)
    try:
        for depth in (500, 1000, 2000):
            payload = b"\x82\xa2id\x07\xa1x" + b"\x91" * depth + b"\x00"
            started = time.monotonic()
            client.send_raw(bytes([2, PING, 0, 0]) + len(payload).to_bytes(4, "big") + payload)
            answer = _next(client, PING, response=True)
            assert answer is not None and answer["code"] == "bad_payload", (depth, answer)
            assert time.monotonic() - started < 2.0
        for epoch in (2**63, 2**64 - 1):
            started = time.monotonic()
            ticket = signed_ticket(key, address, epoch=epoch).to_wire()
            client.send(TICKET, {"id": 9, "ticket": ticket})
            answer = _next(client, TICKET, response=True)
            assert answer is not None and answer["code"] == "bad_payload", answer
            assert time.monotonic() - started < 2.0
        client.send(PING, {"id": 10})
        pong = _next(client, PING, response=True)
        assert pong is not None and pong["id"] == 10 and "code" not in pong
    finally:
        client.close()
    device, fleet = "0x" + key.address.hex(), "0x" + "00" * 20
    started = time.monotonic()
    body = {"jsonrpc": "2.0", "id": 1, "method": "ticket_best", "params": [device, fleet, 2**63]}
    _status, reply = proc.post(json.dumps(body))
    assert reply["error"]["code"] == -32602, reply
    assert time.monotonic() - started < 2.0
    assert "Traceback" not in proc.log()[-20000:]


def test_the_node_kept_serving(node: tuple[NodeProcess, int, bytes]) -> None:
    _proc, port, address = node
    client, _ = _device(port, address)
    try:
        client.send(PING, {"id": 1})
        pong = _next(client, PING, response=True)
        assert pong is not None and pong["id"] == 1
    finally:
        client.close()
