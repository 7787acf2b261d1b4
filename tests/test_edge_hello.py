"""EdgeV2 sessions: TLS, the hello proof (SPEC 3), replacement, limits and timeouts (SPEC 4)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from chrnode.crypto import PrivateKey
from chrnode.device.client import connect
from chrnode.edge.hello import sign_hello
from chrnode.errors import ConnectionClosed, CryptoError, RequestRefused
from chrnode.testing.edge import NodeThread, RawFrameClient, async_test, start_node, wait_for

NOTIFY, HELLO, PING = 0x0B, 0x01, 0x06
RESPONSE, ERROR = 0x0001, 0x0002


@pytest.fixture
def node_thread(tmp_path: Path):  # type: ignore[no-untyped-def]
    thread = NodeThread(tmp_path, hello_timeout=5.0)
    yield thread
    thread.stop()


def _hello_payload(key: PrivateKey, signature: bytes, request_id: int = 1) -> dict[str, object]:
    return {"id": request_id, "device": key.address, "device_sig": signature, "version": 2}


def test_hello_ok_answers_node_epoch_chain_and_fleet(node_thread: NodeThread) -> None:
    key = PrivateKey.generate()
    with node_thread.raw() as client:
        answer = client.hello(key, node_thread.node.address, request_id=7)
        assert answer["id"] == 7
        assert answer["node"] == node_thread.node.address
        assert answer["version"] == 2
        assert answer["epoch"] == 1000
        assert answer["chain_id"] == 31337
        assert answer["fleet"] == bytes(20)
        cipher = client.sock.cipher()
        assert cipher is not None and cipher[0].startswith("ECDHE-ECDSA-") and cipher[1] == "TLSv1.2"
        assert node_thread.run(lambda: key.address in node_thread.node.server.devices)


def test_proof_from_another_session_is_refused(node_thread: NodeThread) -> None:
    key = PrivateKey.generate()
    with node_thread.raw() as first, node_thread.raw() as second:
        _replay(first, second, key, node_thread.node.address)


def _replay(first: RawFrameClient, second: RawFrameClient, key: PrivateKey, node: bytes) -> None:
    binding = first.sock.get_channel_binding("tls-unique")
    assert binding is not None
    replayed = sign_hello(key, binding, node)
    second.send(HELLO, _hello_payload(key, replayed))
    msg_type, flags, answer = second.recv()
    assert (msg_type, flags) == (HELLO, RESPONSE | ERROR)
    assert answer["code"] == "wrong_device" and answer["id"] == 1
    assert second.closed()
    # The session the proof was made for still accepts it.
    first.send(HELLO, _hello_payload(key, replayed))
    assert first.recv()[2]["node"] == node


def test_proof_signed_by_another_key_is_refused(node_thread: NodeThread) -> None:
    claimed, signer = PrivateKey.generate(), PrivateKey.generate()
    client = node_thread.raw()
    binding = client.sock.get_channel_binding("tls-unique")
    assert binding is not None
    client.send(HELLO, _hello_payload(claimed, sign_hello(signer, binding, node_thread.node.address)))
    _t, flags, answer = client.recv()
    assert flags & ERROR and answer["code"] == "wrong_device"
    assert client.closed()
    assert node_thread.run(lambda: node_thread.node.server.devices) == {}


def test_proof_for_another_node_is_refused(node_thread: NodeThread) -> None:
    key = PrivateKey.generate()
    client = node_thread.raw()
    binding = client.sock.get_channel_binding("tls-unique")
    assert binding is not None
    client.send(HELLO, _hello_payload(key, sign_hello(key, binding, PrivateKey.generate().address)))
    assert client.recv()[2]["code"] == "wrong_device"


def test_malformed_signature_is_bad_signature(node_thread: NodeThread) -> None:
    client = node_thread.raw()
    client.send(HELLO, _hello_payload(PrivateKey.generate(), bytes(64) + b"\x07"))
    _t, _f, answer = client.recv()
    assert answer["code"] in ("bad_signature", "bad_payload")
    assert client.closed()


def test_first_message_must_be_hello(node_thread: NodeThread) -> None:
    client = node_thread.raw()
    client.send(PING, {"id": 3})
    msg_type, flags, answer = client.recv()
    assert (msg_type, flags, answer["code"], answer["id"]) == (PING, RESPONSE | ERROR, "hello_required", 3)
    assert client.closed()


def test_unsupported_version_is_refused(node_thread: NodeThread) -> None:
    key = PrivateKey.generate()
    client = node_thread.raw()
    binding = client.sock.get_channel_binding("tls-unique")
    assert binding is not None
    payload = _hello_payload(key, sign_hello(key, binding, node_thread.node.address))
    payload["version"] = 9
    client.send(HELLO, payload)
    assert client.recv()[2]["code"] == "unsupported_version"
    assert client.closed()


def test_second_hello_is_unexpected(node_thread: NodeThread) -> None:
    key = PrivateKey.generate()
    client = node_thread.raw()
    client.hello(key, node_thread.node.address)
    binding = client.sock.get_channel_binding("tls-unique")
    assert binding is not None
    client.send(HELLO, _hello_payload(key, sign_hello(key, binding, node_thread.node.address), 2))
    assert client.recv()[2]["code"] == "unexpected_message"
    client.send(PING, {"id": 4})
    assert client.recv()[2]["id"] == 4  # the session goes on


@async_test()
async def test_hello_timeout_closes_with_notify(tmp_path: Path) -> None:
    node = await start_node(tmp_path, hello_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", node.port, ssl=_client_context(), server_hostname=None
        )
        data = await asyncio.wait_for(reader.read(), 10)  # everything until the node closes
        assert data[1] == NOTIFY and b"timeout" in data
        writer.close()
        assert node.server.snapshot()["errors"].get("timeout") == 1
    finally:
        await node.stop()


@async_test()
async def test_tls_handshake_timeout_drops_silent_socket(tmp_path: Path) -> None:
    node = await start_node(tmp_path, connection_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await wait_for(
            lambda: node.server.snapshot()["handshakes_failed"] == 1, what="handshake failure counted"
        )
        assert node.server.snapshot()["handshaking"] == 0
    finally:
        await node.stop()


@async_test()
async def test_device_client_checks_node_address(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        with pytest.raises(CryptoError, match="expected"):
            await connect(
                "127.0.0.1", node.port, PrivateKey.generate(), expect_node=PrivateKey.generate().address
            )
        client = await node.device()
        assert client.node == node.address
        assert await client.ping() > 0
        await client.close()
    finally:
        await node.stop()


@async_test()
async def test_second_session_of_a_device_wins(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        key = PrivateKey.generate()
        old = await node.device(key)
        new = await node.device(key)
        await asyncio.wait_for(old.wait_closed(), 10)
        assert any(n.code == "replaced" for n in old.notifications)
        with pytest.raises(ConnectionClosed):
            await old.ping()
        assert await new.ping() > 0
        assert len(node.server.devices) == 1
        await wait_for(lambda: node.server.snapshot()["connections"] == 1, what="old session gone")
        await new.close()
    finally:
        await node.stop()


@async_test()
async def test_max_connections_refused_with_busy(tmp_path: Path) -> None:
    node = await start_node(tmp_path, max_connections=2)
    try:
        first, second = await node.device(), await node.device()
        with pytest.raises(ConnectionClosed) as refused:
            await node.device()
        assert refused.value.code == "busy"
        assert await first.ping() > 0 and await second.ping() > 0
        await first.close()
        await wait_for(lambda: node.server.snapshot()["connections"] == 1, what="a free slot")
        third = await node.device()
        assert await third.ping() > 0
        await asyncio.gather(second.close(), third.close())
    finally:
        await node.stop()


@async_test()
async def test_frame_rate_limit_answers_rate_limited_and_spares_others(tmp_path: Path) -> None:
    node = await start_node(tmp_path, frame_rate_per_device=20.0)
    try:
        noisy, quiet = await node.device(auto_tickets=False), await node.device(auto_tickets=False)
        results = await asyncio.gather(*(noisy.ping() for _ in range(100)), return_exceptions=True)
        limited = [r for r in results if isinstance(r, RequestRefused)]
        assert limited and all(r.code == "rate_limited" for r in limited)
        assert sum(isinstance(r, int) for r in results) >= 15
        assert all(isinstance(t, int) for t in await asyncio.gather(*(quiet.ping() for _ in range(10))))
        assert node.server.snapshot()["errors"]["rate_limited"] == len(limited)
        await asyncio.gather(noisy.close(), quiet.close())
    finally:
        await node.stop()


def test_connection_rate_limit_per_source_ip(tmp_path: Path) -> None:
    thread = NodeThread(tmp_path, conn_rate_per_ip=0.5)
    try:
        outcomes = []
        for _ in range(8):
            try:
                client = thread.raw()
            except (ssl.SSLError, OSError):
                outcomes.append("dropped")
                continue
            client.sock.settimeout(0.2)
            try:
                msg_type, _f, payload = client.recv()
                outcomes.append(payload.get("code", "?") if msg_type == NOTIFY else "other")
            except TimeoutError:
                outcomes.append("open")
            except (ConnectionError, ssl.SSLError, OSError):
                outcomes.append("dropped")
            client.close()
        assert outcomes[:4] == ["open"] * 4  # the burst
        assert "rate_limited" in outcomes[4:]
        # Another source address is not affected (all of 127/8 is loopback on Linux).
        other = thread.raw(source="127.0.0.2")
        assert other.hello(PrivateKey.generate(), thread.node.address)["node"] == thread.node.address
        other.close()
    finally:
        thread.stop()


def _client_context() -> ssl.SSLContext:
    from chrnode.identity import edge_client_context

    return edge_client_context()
