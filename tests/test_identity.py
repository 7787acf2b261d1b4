"""Node key file and certificates on disk (SPEC 2, SPEC 3)."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chrnode.crypto import PrivateKey, parse_address
from chrnode.errors import CryptoError
from chrnode.identity import (
    ensure_node_certificate,
    ensure_rpc_certificate,
    load_node_identity,
    load_or_create_node_key,
    node_address_from_cert,
    node_certificate_der,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "node.key"
    key = load_or_create_node_key(path)
    assert mode_of(path) == 0o600
    assert path.read_text().strip() == key.to_hex()
    assert load_or_create_node_key(path) == key  # second start: same identity
    assert [p.name for p in path.parent.iterdir()] == ["node.key"]  # no temp files left behind


def test_operator_supplied_key_is_used(tmp_path: Path) -> None:
    path = tmp_path / "operator.key"
    path.write_text("0xAC0974BEC39A17E36BA4A6B4D238FF944BACB478CBED5EFCAE784D7BF4F2FF80\n")
    path.chmod(0o600)
    assert load_or_create_node_key(path).hex_address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o666])
def test_world_accessible_key_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    path.write_text(PrivateKey.generate().to_hex())
    path.chmod(mode)
    with pytest.raises(CryptoError, match=f"mode {mode:04o}.*chmod 600"):
        load_or_create_node_key(path)
    assert mode_of(path) == mode  # refused, not silently "fixed" or replaced


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "64 hex digits"),
        (b"hello", "64 hex digits"),
        (b"\xff\xfe" * 32, "binary data"),
        (b"zz" * 32, "hex digits 0-9a-f"),
        (b"00" * 32, "out of range"),
    ],
)
def test_malformed_key_refused(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(CryptoError, match=f"node key file {path} .*{match}"):
        load_or_create_node_key(path)
    assert path.read_bytes() == content  # never overwritten


def test_key_path_that_is_a_directory_refused(tmp_path: Path) -> None:
    (tmp_path / "node.key").mkdir()
    with pytest.raises(CryptoError, match="not a regular file"):
        load_or_create_node_key(tmp_path / "node.key")


def test_node_certificate_names_and_derives_the_address(tmp_path: Path) -> None:
    identity = load_node_identity(tmp_path)
    assert mode_of(identity.key_pem_path) == 0o600
    cert = x509.load_pem_x509_certificate(identity.cert_path.read_bytes())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert node_address_from_cert(der) == identity.address
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert parse_address(str(cn)) == identity.address
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"chr:{identity.key.hex_address}"]
    assert isinstance(cert.public_key().curve, ec.SECP256K1)  # type: ignore[union-attr]
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=3650)


def test_certificate_kept_while_it_matches_and_replaced_when_the_key_changes(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    cert_path, _ = ensure_node_certificate(key, tmp_path)
    first = cert_path.read_bytes()
    assert ensure_node_certificate(key, tmp_path)[0].read_bytes() == first
    other = PrivateKey.generate()
    ensure_node_certificate(other, tmp_path)
    der = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert node_address_from_cert(der) == other.address


def test_address_comes_from_the_key_not_the_cn() -> None:
    # A certificate whose CN claims someone else's address still yields its key's address.
    real, claimed = PrivateKey.generate(), PrivateKey.generate()
    private = ec.derive_private_key(int.from_bytes(real.to_bytes(), "big"), ec.SECP256K1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, claimed.hex_address)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )  # fmt: skip
    assert node_address_from_cert(cert.public_bytes(serialization.Encoding.DER)) == real.address


def test_non_secp256k1_or_garbage_certificates_refused(tmp_path: Path) -> None:
    rpc_cert, _ = ensure_rpc_certificate(tmp_path)
    der = x509.load_pem_x509_certificate(rpc_cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(CryptoError, match="secp256k1"):
        node_address_from_cert(der)
    with pytest.raises(CryptoError, match="not a valid DER"):
        node_address_from_cert(b"\x30\x03garbage")
    assert node_address_from_cert(node_certificate_der(key := PrivateKey.generate())) == key.address


def test_rpc_certificate_made_once(tmp_path: Path) -> None:
    cert_path, key_path = ensure_rpc_certificate(tmp_path)
    assert mode_of(key_path) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert isinstance(cert.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    before = os.stat(cert_path).st_mtime_ns
    assert ensure_rpc_certificate(tmp_path) == (cert_path, key_path)
    assert os.stat(cert_path).st_mtime_ns == before


def test_unusable_key_location_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CryptoError, match="afile"):
        load_or_create_node_key(tmp_path / "afile" / "node.key")
    with pytest.raises(CryptoError, match="cannot create"):
        ensure_node_certificate(PrivateKey.generate(), tmp_path / "afile")


def test_key_pem_of_another_key_is_replaced(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    _, key_pem = ensure_node_certificate(key, tmp_path)
    good = key_pem.read_bytes()
    key_pem.write_bytes(b"stale")
    ensure_node_certificate(key, tmp_path)
    assert key_pem.read_bytes() == good
