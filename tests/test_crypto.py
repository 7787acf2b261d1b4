"""Keys, addresses and signatures (SPEC 2), cross-checked against eth-keys and eth-account."""

from __future__ import annotations

import hashlib

import pytest
from eth_account import Account
from eth_keys import keys as eth_keys
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.crypto import (
    SECP256K1_N,
    PrivateKey,
    keccak256,
    parse_address,
    recover_address,
    to_hex_address,
)
from chrnode.errors import CryptoError

secrets_st = st.integers(1, SECP256K1_N - 1).map(lambda n: n.to_bytes(32, "big"))


def test_keccak_known_vectors_not_sha3() -> None:
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert keccak256(b"abc").hex() == "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
    assert keccak256(b"") != hashlib.sha3_256(b"").digest()  # Ethereum Keccak, not NIST SHA3
    assert keccak256(memoryview(b"abc")) == keccak256(bytearray(b"abc"))


def test_known_key_address() -> None:
    # The well-known first anvil/hardhat account.
    key = PrivateKey.from_hex("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
    assert key.hex_address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert key.address == bytes.fromhex("f39fd6e51aad88f6f4ce6ab8827279cfffb92266")
    assert "ac0974" not in repr(key)  # the secret never shows in logs


@settings(max_examples=25, deadline=None)
@given(secret=secrets_st, message=st.binary(max_size=64))
def test_signatures_cross_check_with_eth_keys(secret: bytes, message: bytes) -> None:
    key = PrivateKey.from_bytes(secret)
    theirs = eth_keys.PrivateKey(secret)
    assert key.public_key == theirs.public_key.to_bytes()
    assert key.address == theirs.public_key.to_canonical_address()
    assert key.hex_address == Account.from_key(secret).address
    digest = keccak256(message)

    ours = key.sign_hash(digest)
    assert len(ours) == 65 and ours[64] in (0, 1)
    assert int.from_bytes(ours[32:64], "big") <= SECP256K1_N // 2  # low-s
    # eth-keys recovers what we sign...
    assert eth_keys.Signature(ours).recover_public_key_from_msg_hash(digest) == theirs.public_key
    # ...we recover what eth-keys signs, and eth-keys signs the same deterministic (RFC 6979) bytes.
    their_sig = theirs.sign_msg_hash(digest).to_bytes()
    assert recover_address(digest, their_sig) == key.address
    assert their_sig == ours


def test_generated_keys_differ_and_round_trip() -> None:
    one, two = PrivateKey.generate(), PrivateKey.generate()
    assert one != two and one.address != two.address
    assert PrivateKey.from_hex(one.to_hex()) == one
    assert PrivateKey.from_bytes(one.to_bytes()).address == one.address


@pytest.mark.parametrize(
    ("secret", "match"),
    [
        (b"\x01" * 31, "32 bytes, got 31 bytes"),
        (bytes(32), "out of range"),
        (SECP256K1_N.to_bytes(32, "big"), "out of range"),
        ("00" * 32, "32 bytes, got str"),
    ],
)
def test_bad_private_keys(secret: object, match: str) -> None:
    with pytest.raises(CryptoError, match=match):
        PrivateKey(secret)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "match"),
    [("ab" * 31, "64 hex digits"), ("zz" * 32, "hex digits 0-9a-f"), ("ab " * 21 + "a", "hex digits")],
)
def test_bad_private_key_hex(text: str, match: str) -> None:
    with pytest.raises(CryptoError, match=match):
        PrivateKey.from_hex(text)


def test_recover_rejects_malformed_input() -> None:
    key = PrivateKey.generate()
    digest = keccak256(b"x")
    sig = key.sign_hash(digest)
    with pytest.raises(CryptoError, match="v must be 0 or 1, got 27"):
        recover_address(digest, sig[:64] + bytes([27]))
    with pytest.raises(CryptoError, match="65 bytes r"):
        recover_address(digest, sig[:64])
    with pytest.raises(CryptoError, match="hash must be 32 bytes"):
        recover_address(b"short", sig)
    with pytest.raises(CryptoError, match="does not recover"):
        recover_address(digest, bytes(64) + b"\x00")  # r = s = 0
    with pytest.raises(CryptoError, match="does not recover"):
        recover_address(digest, b"\xff" * 64 + b"\x00")  # r, s >= n
    with pytest.raises(CryptoError, match="hash must be 32 bytes"):
        key.sign_hash(b"\x00" * 31)
    # A valid signature over another hash recovers to some other address, not an error.
    assert recover_address(keccak256(b"y"), sig) != key.address


def test_high_s_signature_is_accepted_on_recovery() -> None:
    # Ethereum's ecrecover accepts high-s; we sign low-s only but must read what others send.
    key = PrivateKey.generate()
    digest = keccak256(b"malleable")
    sig = key.sign_hash(digest)
    s = int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([sig[64] ^ 1])
    assert recover_address(digest, flipped) == key.address


@settings(max_examples=50, deadline=None)
@given(address=st.binary(min_size=20, max_size=20))
def test_checksum_address_matches_eth_utils(address: bytes) -> None:
    text = to_hex_address(address)
    assert text == to_checksum_address(address)
    assert parse_address(text) == address
    assert parse_address(text.lower()) == address and parse_address("0X" + text[2:].upper()) == address


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("f39fd6e51aad88f6f4ce6ab8827279cfffb92266", "must start with 0x"),
        ("0xf39fd6e51aad88f6f4ce6ab8827279cfffb922", "40 hex digits after 0x, got 38"),
        ("0xg39fd6e51aad88f6f4ce6ab8827279cfffb92266", "only hex digits"),
        ("0xf3 9fd6e51aad88f6f4ce6ab8827279cfffb9226", "only hex digits"),
        (b"0x00", "got bytes"),
    ],
)
def test_parse_address_errors(text: str, match: str) -> None:
    with pytest.raises(CryptoError, match=match):
        parse_address(text)


def test_to_hex_address_length() -> None:
    with pytest.raises(CryptoError, match="20 bytes, got 19"):
        to_hex_address(bytes(19))
