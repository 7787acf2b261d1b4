"""The RPC HTTP(S) server on real sockets (127.0.0.1, port 0) with real HTTP clients."""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import json
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from chrnode.errors import ConfigError
from chrnode.rpc.api import NodeView
from chrnode.rpc.server import is_admin_header, make_app, read_cookie, start_servers, write_cookie
from chrnode.rpc.wire import INVALID_REQUEST, PARSE_ERROR, UNAUTHORIZED, UNAUTHORIZED_MESSAGE
from chrnode.testing.rpc import (
    TOKEN,
    RecordingAdmin,
    ServedApp,
    http_get,
    http_post,
    rpc_factory,
    sample_snapshot,
)

INFO = b'{"jsonrpc":"2.0","method":"chr_node_info","id":1}'


@pytest.fixture(scope="module")
def server() -> Iterator[ServedApp]:
    with ServedApp(rpc_factory(NodeView(sample_snapshot()), max_body=4096, max_batch=5)) as s:
        yield s


@pytest.fixture
def fresh() -> Iterator[tuple[ServedApp, NodeView, RecordingAdmin]]:
    view = NodeView(sample_snapshot())
    admin = RecordingAdmin()
    with ServedApp(rpc_factory(view, admin)) as s:
        yield s, view, admin


def post_json(port: int, payload: Any, headers: dict[str, str] | None = None, path: str = "/rpc") -> Any:
    status, hdrs, body = http_post(port, path, json.dumps(payload).encode(), headers)
    assert status == 200, (status, body)
    assert hdrs["content-type"] == "application/json"
    return json.loads(body)


def test_chr_node_info_on_rpc_and_root(server: ServedApp) -> None:
    for path in ("/rpc", "/"):
        status, headers, body = http_post(server.port, path, INFO)
        assert status == 200 and headers["content-type"] == "application/json"
        result = json.loads(body)["result"]
        assert result["address"] == "0x" + "ab" * 20 and result["ports"]["rpc"] == 8545


def test_content_type_is_not_enforced(server: ServedApp) -> None:
    status, _, body = http_post(server.port, "/rpc", INFO, {"Content-Type": "text/plain"})
    assert status == 200 and "result" in json.loads(body)


def test_parse_error_over_http(server: ServedApp) -> None:
    answer = json.loads(http_post(server.port, "/rpc", b"{nope")[2])
    assert answer["error"]["code"] == PARSE_ERROR and answer["id"] is None


def test_notifications_only_get_204(server: ServedApp) -> None:
    status, _, body = http_post(
        server.port, "/rpc", b'[{"jsonrpc":"2.0","method":"health"},{"jsonrpc":"2.0","method":"nope"}]'
    )
    assert status == 204 and body == b""


def test_mixed_batch_over_http(server: ServedApp) -> None:
    answer = post_json(
        server.port,
        [
            {"jsonrpc": "2.0", "method": "peer_list", "id": "a"},
            {"jsonrpc": "2.0", "method": "health"},
            {"jsonrpc": "2.0", "method": "nope", "id": 2},
            5,
        ],
    )
    assert [a["id"] for a in answer] == ["a", 2, None]
    assert answer[0]["result"]["known"] == 20
    assert answer[1]["error"]["code"] == -32601 and answer[2]["error"]["code"] == INVALID_REQUEST


def test_batch_limit_over_http(server: ServedApp) -> None:
    answer = post_json(server.port, [{"jsonrpc": "2.0", "method": "health", "id": i} for i in range(6)])
    assert answer["error"]["code"] == INVALID_REQUEST
    assert "rpc_max_batch = 5" in answer["error"]["message"]


def test_keep_alive_survives_errors(server: ServedApp) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        for body in (INFO, b"garbage", b"[]", INFO):
            conn.request("POST", "/rpc", body=body)
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["jsonrpc"] == "2.0"
    finally:
        conn.close()


# --- admin token ------------------------------------------------------------------------------------------


STOP = {"jsonrpc": "2.0", "method": "admin_stop", "id": 1}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer " + TOKEN[:-1]},
        {"Authorization": "Bearer " + TOKEN + "0"},
        {"Authorization": _basic("admin", TOKEN)},
        {"Authorization": _basic("__cookie__", "wrong")},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Token " + TOKEN},
        {"Authorization": TOKEN},
    ],
)
def test_admin_refused_without_the_token(
    fresh: tuple[ServedApp, NodeView, RecordingAdmin], headers: dict[str, str]
) -> None:
    server, _, admin = fresh
    answer = post_json(server.port, STOP, headers)
    assert answer["error"]["code"] == UNAUTHORIZED
    assert answer["error"]["message"] == UNAUTHORIZED_MESSAGE
    assert admin.calls == []


@pytest.mark.parametrize("auth", ["Bearer " + TOKEN, "bearer  " + TOKEN, _basic("__cookie__", TOKEN)])
def test_admin_accepted_with_the_token(fresh: tuple[ServedApp, NodeView, RecordingAdmin], auth: str) -> None:
    server, _, admin = fresh
    answer = post_json(
        server.port,
        {"jsonrpc": "2.0", "method": "admin_restart_actor", "params": ["Cron"], "id": 1},
        {"Authorization": auth},
    )
    assert answer["result"] == {"restarted": "Cron"}
    assert admin.calls == [("restart_actor", "Cron")]


def test_empty_token_disables_admin() -> None:
    assert not is_admin_header("Bearer ", "")
    assert not is_admin_header(_basic("__cookie__", ""), "")
    admin = RecordingAdmin()
    with ServedApp(rpc_factory(NodeView({}), admin, admin_token="")) as s:
        answer = post_json(s.port, STOP, {"Authorization": "Bearer "})
    assert answer["error"]["code"] == UNAUTHORIZED and admin.calls == []


def test_cookie_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / ".cookie"
    token = write_cookie(path)
    assert len(token) == 64 and read_cookie(path) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("__cookie__:")
    assert write_cookie(path) != token  # a new token each start
    path.write_text("garbage")
    with pytest.raises(ConfigError, match="__cookie__:<token>"):
        read_cookie(path)
    with pytest.raises(ConfigError, match="readable file"):
        read_cookie(tmp_path / "missing")


# --- limits -----------------------------------------------------------------------------------------------


def _raw_exchange(port: int, data: bytes, *, read_timeout: float = 20.0) -> bytes:
    """Send `data`, half-close, then read until the server closes (bounded by read_timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + read_timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def _read_one_response(sock: socket.socket) -> bytes:
    """Read exactly one response (headers + Content-Length bytes), without waiting for a close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a full response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(_split(data)[1]["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return head + b"\r\n\r\n" + body


def _split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, body


def test_oversized_body_refused_from_its_length_unread(server: ServedApp) -> None:
    # Announce 10 GB and send none of it: the answer must come at once, without the body.
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(
            b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        status, headers, body = _split(_read_one_response(sock))
        # Once the client stops sending, the server closes (it only drains what still comes).
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""
    assert status == "HTTP/1.1 413 Payload Too Large"
    assert headers["connection"] == "close"
    answer = json.loads(body)
    assert answer["error"]["code"] == INVALID_REQUEST and answer["id"] is None
    assert "body is 10000000000 bytes; the limit is rpc_max_body = 4096 bytes" in answer["error"]["message"]


def test_oversized_body_sent_whole_still_gets_the_answer(server: ServedApp) -> None:
    # A client that sends the whole body before reading (http.client) must see the 413, not a reset.
    body = json.dumps({"jsonrpc": "2.0", "method": "health", "params": ["x" * 300_000], "id": 1}).encode()
    status, _, answer = http_post(server.port, "/rpc", body)
    assert status == 413
    assert json.loads(answer)["error"]["code"] == INVALID_REQUEST


def test_oversized_chunked_body_is_cut_off(server: ServedApp) -> None:
    chunk = b"x" * 3000
    data = (
        b"POST /rpc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 3
        + b"0\r\n\r\n"
    )
    status, _, _ = _split(_raw_exchange(server.port, data))
    assert status == "HTTP/1.1 400 Bad Request"


def test_body_at_the_limit_is_served(server: ServedApp) -> None:
    head = b'{"jsonrpc":"2.0","method":"health","id":1}'
    body = head + b" " * (4096 - len(head))
    status, _, answer = http_post(server.port, "/rpc", body)
    assert status == 200 and "result" in json.loads(answer)


def test_server_still_serves_after_refusals(server: ServedApp) -> None:
    for _ in range(3):
        _raw_exchange(server.port, b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
    assert http_post(server.port, "/rpc", INFO)[0] == 200


# --- other endpoints --------------------------------------------------------------------------------------


def test_metrics_parse(server: ServedApp) -> None:
    status, headers, body = http_get(server.port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"chr_connections", "chr_bandwidth_bytes", "chr_latency_seconds", "chr_health_status"} <= names


def test_health_200_then_503(fresh: tuple[ServedApp, NodeView, RecordingAdmin]) -> None:
    server, view, _ = fresh
    status, headers, body = http_get(server.port, "/health")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["status"] == "ok"

    view.set_part("storage", {"writable": True, "checked_at": time.time() - 10_000})
    status, _, body = http_get(server.port, "/health")
    assert status == 200 and json.loads(body)["status"] == "degraded"

    view.set_part("storage", {"writable": False, "error": "database is locked", "checked_at": time.time()})
    status, _, body = http_get(server.port, "/health")
    report = json.loads(body)
    assert status == 503 and report["status"] == "down"
    assert report["layers"]["storage"] == {
        "status": "down",
        "reason": "database not writable: database is locked",
    }


@pytest.mark.parametrize(
    "method, path, code",
    [
        ("GET", "/nope", 404),
        ("POST", "/rpc/x", 404),
        ("GET", "/rpc", 405),
        ("GET", "/", 405),
        ("PUT", "/metrics", 405),
        ("DELETE", "/health", 405),
        ("POST", "/metrics", 405),
    ],
)
def test_other_routes_answer_json_errors(server: ServedApp, method: str, path: str, code: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.request(method, path, body=b"{}" if method in ("POST", "PUT") else None)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == code
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(body)["error"]["code"] == code


def test_observer_sees_every_request() -> None:
    seen: list[tuple[str, int, float]] = []
    with ServedApp(rpc_factory(NodeView({}), observer=lambda *row: seen.append(row))) as s:
        http_post(s.port, "/rpc", INFO)
        http_get(s.port, "/health")
    # An empty snapshot is degraded (nothing reported yet), not down: /health is still 200.
    assert [(path, status) for path, status, _ in seen] == [("/rpc", 200), ("/health", 200)]
    assert all(0 <= seconds < 10 for _, _, seconds in seen)


# --- listening --------------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chr-node test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "rpcs.crt", tmp_path / "rpcs.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_https(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    with ServedApp(rpc_factory(NodeView(sample_snapshot())), ssl_ctx=server_ctx) as s:
        assert s.https_port and s.https_port != s.port
        conn = http.client.HTTPSConnection("127.0.0.1", s.https_port, context=client_ctx, timeout=20)
        try:
            conn.request("POST", "/rpc", body=INFO)
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["result"]["address"] == "0x" + "ab" * 20
        finally:
            conn.close()
        # The oversized-body refusal takes over the TLS stream the same way.
        raw = socket.create_connection(("127.0.0.1", s.https_port), timeout=20)
        with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
            status, _, body = _split(_read_one_response(tls))
        assert status == "HTTP/1.1 413 Payload Too Large"
        assert json.loads(body)["error"]["code"] == INVALID_REQUEST


def test_port_in_use_is_a_config_error() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        app = make_app(NodeView({}), RecordingAdmin(), admin_token=TOKEN)
        with pytest.raises(ConfigError, match="rpc_port"):
            start_servers(app, holder.getsockname()[1], None, "127.0.0.1", None)
        with pytest.raises(ConfigError, match="SSL context"):
            start_servers(app, None, 0, "127.0.0.1", None)
    finally:
        holder.close()
