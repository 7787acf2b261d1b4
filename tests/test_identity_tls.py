"""EdgeV2 TLS on real loopback sockets (SPEC 3) and the hello proof bound to the session."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chrnode.crypto import PrivateKey
from chrnode.edge import codes
from chrnode.edge.hello import hello_digest, sign_hello, verify_hello
from chrnode.errors import CryptoError, RemoteProtocolError
from chrnode.identity import (
    EDGE_CIPHERS,
    check_secp256k1_tls_support,
    edge_client_context,
    edge_server_context,
    load_node_identity,
    node_address_from_cert,
    tls_unique,
)
from chrnode.testing.crypto import memory_handshake

TIMEOUT = 20.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_node_identity(tmp_path_factory.mktemp("node"))


@pytest.fixture
def server_ctx(node: Any) -> ssl.SSLContext:
    return edge_server_context(node.key_pem_path, node.cert_path)


class OneShotServer:
    """Accepts connections on 127.0.0.1:0 in a thread, runs ``handle`` on each TLS socket."""

    def __init__(self, ctx: ssl.SSLContext, handle: Callable[[ssl.SSLSocket], Any], count: int = 1) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.results: list[Any] = []
        self.thread = threading.Thread(target=self._run, args=(ctx, handle, count), daemon=True)
        self.thread.start()

    def _run(self, ctx: ssl.SSLContext, handle: Callable[[ssl.SSLSocket], Any], count: int) -> None:
        for _ in range(count):
            try:
                raw, _ = self.sock.accept()
                raw.settimeout(TIMEOUT)
                with ctx.wrap_socket(raw, server_side=True) as tls:
                    self.results.append(handle(tls))
            except (OSError, ssl.SSLError) as exc:
                self.results.append(exc)

    def join(self) -> list[Any]:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "server thread did not finish"
        self.sock.close()
        return self.results


@pytest.fixture
def serve(server_ctx: ssl.SSLContext) -> Iterator[Callable[..., OneShotServer]]:
    servers: list[OneShotServer] = []

    def start(handle: Callable[[ssl.SSLSocket], Any], count: int = 1) -> OneShotServer:
        servers.append(OneShotServer(server_ctx, handle, count))
        return servers[-1]

    yield start
    for server in servers:
        server.sock.close()


def connect(port: int, ctx: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return (ctx or edge_client_context()).wrap_socket(raw)


def session_facts(tls: ssl.SSLSocket) -> dict[str, Any]:
    cipher = tls.cipher()
    return {"version": tls.version(), "cipher": cipher[0] if cipher else None, "unique": tls_unique(tls)}


def test_running_openssl_offers_secp256k1() -> None:
    # SPEC 3: fails loudly (not skipped) where OpenSSL >= 3.5 has turned the group off.
    check_secp256k1_tls_support()


def test_support_check_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import chrnode.identity as identity

    monkeypatch.setattr(identity, "_tls_support_checked", False)
    monkeypatch.setattr(identity, "EDGE_CURVE", "no-such-group")  # what OpenSSL >= 3.5 amounts to
    with pytest.raises(CryptoError, match=r"cannot offer the secp256k1 TLS group .*SPEC 3"):
        identity.check_secp256k1_tls_support()


def test_loopback_handshake_is_tls12_ecdhe_secp256k1(node: Any, serve: Callable[..., OneShotServer]) -> None:
    server = serve(session_facts)
    with connect(server.port) as tls:
        client = session_facts(tls)
        der = tls.getpeercert(binary_form=True)
    (theirs,) = server.join()
    assert client["version"] == theirs["version"] == "TLSv1.2"
    assert client["cipher"] == theirs["cipher"] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    assert client["unique"] == theirs["unique"] and len(client["unique"]) == 12
    assert der is not None and node_address_from_cert(der) == node.address


def test_only_secp256k1_key_exchange_is_accepted(serve: Callable[..., OneShotServer]) -> None:
    # The server offers ECDHE on secp256k1 only: a client without that group cannot connect,
    # which is what makes a successful ECDHE handshake above a secp256k1 one.
    server = serve(session_facts)
    ctx = edge_client_context()
    ctx.set_ecdh_curve("prime256v1")
    with pytest.raises((ssl.SSLError, OSError)):
        connect(server.port, ctx)
    assert isinstance(server.join()[0], ssl.SSLError | OSError)


def test_tls13_and_non_aead_suites_are_not_offered(serve: Callable[..., OneShotServer]) -> None:
    server = serve(session_facts, count=2)
    tls13 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls13.check_hostname, tls13.verify_mode = False, ssl.CERT_NONE
    tls13.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises((ssl.SSLError, OSError)):
        connect(server.port, tls13)
    cbc = edge_client_context()
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256")
    with pytest.raises((ssl.SSLError, OSError)):
        connect(server.port, cbc)
    assert all(isinstance(r, ssl.SSLError | OSError) for r in server.join())


def test_contexts_offer_exactly_the_spec_ciphers(server_ctx: ssl.SSLContext) -> None:
    for ctx in (server_ctx, edge_client_context()):
        names = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
        assert names == EDGE_CIPHERS.split(":")
        assert ctx.maximum_version == ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def hello_over(tls: ssl.SSLSocket, key: PrivateKey, node_address: bytes) -> None:
    """Device side: send address + proof (raw, 20 + 65 bytes: this test is about the proof, not framing)."""
    tls.sendall(key.address + sign_hello(key, tls_unique(tls), node_address))


def check_hello(node_address: bytes) -> Callable[[ssl.SSLSocket], Any]:
    def handle(tls: ssl.SSLSocket) -> Any:
        data = b""
        while len(data) < 85:
            chunk = tls.recv(85 - len(data))
            if not chunk:
                break
            data += chunk
        try:
            verify_hello(data[:20], data[20:85], tls_unique(tls), node_address)
        except RemoteProtocolError as exc:
            return exc
        return "ok"

    return handle


def test_hello_proof_over_a_real_session(node: Any, serve: Callable[..., OneShotServer]) -> None:
    device = PrivateKey.generate()
    server = serve(check_hello(node.address), count=3)
    with connect(server.port) as tls:  # honest device
        hello_over(tls, device, node.address)
        first_unique = tls_unique(tls)
    with connect(server.port) as tls:  # replays the proof of the first session
        tls.sendall(device.address + sign_hello(device, first_unique, node.address))
    with connect(server.port) as tls:  # signs for another node
        hello_over(tls, device, PrivateKey.generate().address)
    ok, replayed, other_node = server.join()
    assert ok == "ok"
    assert isinstance(replayed, RemoteProtocolError) and replayed.code == codes.WRONG_DEVICE
    assert isinstance(other_node, RemoteProtocolError) and other_node.code == codes.WRONG_DEVICE


def test_hello_verification_faults(server_ctx: ssl.SSLContext, node: Any) -> None:
    server, client = memory_handshake(server_ctx, edge_client_context())
    unique = tls_unique(client)
    assert unique == tls_unique(server)
    device = PrivateKey.generate()
    proof = sign_hello(device, unique, node.address)
    verify_hello(device.address, proof, unique, node.address)
    with pytest.raises(RemoteProtocolError, match="recovers to") as info:
        verify_hello(PrivateKey.generate().address, proof, unique, node.address)  # false claim
    assert info.value.code == codes.WRONG_DEVICE
    with pytest.raises(RemoteProtocolError) as info:
        verify_hello(device.address, proof[:64] + b"\x05", unique, node.address)
    assert info.value.code == codes.BAD_SIGNATURE
    assert hello_digest(unique, node.address) != hello_digest(unique[::-1], node.address)
    with pytest.raises(CryptoError, match="tls-unique"):
        hello_digest(b"", node.address)


def test_tls_unique_before_handshake_is_an_error(server_ctx: ssl.SSLContext) -> None:
    obj = edge_client_context().wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    with pytest.raises(CryptoError, match="not completed"):
        tls_unique(obj)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
def test_openssl_s_client_sees_tls12_secp256k1_and_the_node_address(
    node: Any, serve: Callable[..., OneShotServer], tmp_path: Path
) -> None:
    server = serve(session_facts)
    # s_client offers secp256k1 only when told to, and only for TLS 1.2 (TLS 1.3 has no such group).
    address = f"127.0.0.1:{server.port}"
    command = ["openssl", "s_client", "-connect", address, "-tls1_2", "-groups", "secp256k1"]
    result = subprocess.run(
        [*command, "-showcerts"],
        input=b"",
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    out = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    server.join()
    assert "TLSv1.2" in out, out
    assert "ECDHE-ECDSA-AES256-GCM-SHA384" in out, out
    assert "Server Temp Key: ECDH, secp256k1" in out, out
    pem = out[out.index("-----BEGIN CERTIFICATE-----") : out.index("-----END CERTIFICATE-----") + 25]
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    assert node_address_from_cert(der) == node.address
    assert f"CN = {node.key.hex_address}" in out
