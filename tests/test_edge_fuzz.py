"""Bad input on the device port (SPEC 4): garbage, bad frames and floods from raw TLS clients never
crash the node or disturb other devices; each fault gets its answer or closes that connection."""

from __future__ import annotations

import logging
import ssl
import struct
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chrnode.crypto import PrivateKey
from chrnode.testing.edge import NodeThread, RawFrameClient

PING, NOTIFY = 0x06, 0x0B
RESPONSE, ERROR = 0x0001, 0x0002
PROBE_ID = 424242


def _frame(msg_type: int, payload: bytes, flags: int = 0, version: int = 2) -> bytes:
    return struct.pack(">BBHI", version, msg_type, flags, len(payload)) + payload


class _Witness:
    """A device that stays connected through a test and must keep getting answers."""

    def __init__(self, thread: NodeThread) -> None:
        self.client = thread.raw()
        self.client.hello(PrivateKey.generate(), thread.node.address)
        self.next_id = 1000

    def ping(self) -> None:
        self.next_id += 1
        self.client.send(PING, {"id": self.next_id})
        while True:
            msg_type, flags, payload = self.client.recv()
            if msg_type == PING and flags == RESPONSE:
                assert payload["id"] == self.next_id
                return


def _answer_or_close(client: RawFrameClient, timeout: float = 10.0) -> str:
    """Send a probe ping and read until its answer ('alive') or the end of the connection."""
    try:
        client.send(PING, {"id": PROBE_ID})
        client.sock.settimeout(timeout)
        while True:
            msg_type, flags, payload = client.recv()
            if (
                msg_type == PING
                and flags & RESPONSE
                and isinstance(payload, dict)
                and payload.get("id") == PROBE_ID
            ):
                return "alive"
    except TimeoutError:
        return "hung"
    except (ConnectionError, ssl.SSLError, OSError, ValueError):
        return "closed"


@pytest.fixture
def thread(tmp_path: Path):  # type: ignore[no-untyped-def]
    node = NodeThread(tmp_path, hello_timeout=5.0, conn_rate_per_ip=10_000.0)
    yield node
    node.stop()


def _no_handler_crash(caplog: pytest.LogCaptureFixture) -> None:
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("chrnode")]
    assert not crashes, [r.getMessage() for r in crashes]


_KEYS = ["id", "ref", "data", "device", "port", "flags", "name", "ticket", "node", "key"]
_VALUES = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=20),
    st.none(),
    st.lists(st.integers(-(2**63), 2**63), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(-1000, 1000), max_size=3),
)
frames = st.tuples(
    st.integers(0, 255),  # type, known or not
    st.sampled_from([0, RESPONSE, ERROR, RESPONSE | ERROR, 0x0004, 0x0008, 0xFFFF]),
    st.one_of(
        st.binary(max_size=300),
        st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=5).map(
            lambda m: msgpack.packb(m, use_bin_type=True)
        ),
    ),
)


def test_generated_frames_after_hello_get_answers_and_spare_others(
    thread: NodeThread, caplog: pytest.LogCaptureFixture
) -> None:
    witness = _Witness(thread)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(frames, min_size=1, max_size=4))
    def check(batch: list[tuple[int, int, bytes]]) -> None:
        with thread.raw() as client:
            client.hello(PrivateKey.generate(), thread.node.address)
            for msg_type, flags, payload in batch:
                client.send_raw(_frame(msg_type, payload, flags))
            assert _answer_or_close(client) in ("alive", "closed")
        witness.ping()

    check()
    _no_handler_crash(caplog)


def test_generated_garbage_before_hello_never_hurts(
    thread: NodeThread, caplog: pytest.LogCaptureFixture
) -> None:
    witness = _Witness(thread)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(min_size=1, max_size=3000))
    def check(garbage: bytes) -> None:
        with thread.raw() as client:
            client.send_raw(garbage)
        witness.ping()

    check()
    _no_handler_crash(caplog)
    assert thread.run(lambda: thread.node.server.snapshot()["devices"]) == 1


def test_framing_faults_answer_then_close(thread: NodeThread) -> None:
    for raw, code in (
        (_frame(PING, b"\x80", version=3), "bad_frame"),
        (struct.pack(">BBHI", 2, PING, 0, 50 << 20), "frame_too_large"),
    ):
        with thread.raw() as client:
            client.hello(PrivateKey.generate(), thread.node.address)
            client.send_raw(raw)
            _type, _flags, payload = client.recv()
            assert payload["code"] == code, payload
            assert client.closed()


def test_bad_payload_gets_error_with_its_id(thread: NodeThread) -> None:
    with thread.raw() as client:
        client.hello(PrivateKey.generate(), thread.node.address)
        client.send(0x03, {"id": 77, "device": b"short", "port": 1})  # portopen, device not 20 bytes
        msg_type, flags, payload = client.recv()
        assert (msg_type, flags, payload["id"], payload["code"]) == (
            0x03,
            RESPONSE | ERROR,
            77,
            "bad_payload",
        )
        client.send_raw(_frame(0x7E, msgpack.packb({"id": 78})))
        msg_type, _flags, payload = client.recv()
        assert (msg_type, payload["code"]) == (NOTIFY, "unknown_type")
        assert _answer_or_close(client) == "alive"


def test_repeated_faults_close_the_connection(thread: NodeThread) -> None:
    with thread.raw() as client:
        client.hello(PrivateKey.generate(), thread.node.address)
        for i in range(30):
            try:
                client.send_raw(_frame(PING, b"\xc1" + bytes([i])))  # 0xc1 is never valid msgpack
            except (ssl.SSLError, OSError):
                break
        assert client.closed()
    assert thread.run(lambda: thread.node.server.snapshot()["errors"]["bad_payload"]) >= 10


def test_flood_from_one_device_does_not_stall_another(thread: NodeThread) -> None:
    witness = _Witness(thread)
    with thread.raw() as flooder:
        flooder.hello(PrivateKey.generate(), thread.node.address)
        flood = _frame(PING, msgpack.packb({})) * 5000  # pings without id: no answers, just work
        flooder.sock.settimeout(30)
        started = time.monotonic()
        try:
            for _ in range(10):
                flooder.send_raw(flood)
                witness.ping()
        except (TimeoutError, ssl.SSLError, OSError):
            pass  # the node may throttle the flooder; that is its business
        slowest = time.monotonic() - started
    witness.ping()
    assert slowest < 30
