"""secp256k1 keys, Ethereum addresses and recoverable signatures (SPEC 2).

Everything here is pure: bytes in, bytes out. Every failure raises :class:`CryptoError` with a
message that says what was wrong and what was expected; foreign errors from coincurve are converted
at this boundary.

- ``keccak256`` is Ethereum's Keccak-256 (the pre-standard padding), not NIST SHA3-256.
- An address is the last 20 bytes of keccak256 of the 64-byte uncompressed public key (no 0x04).
- A signature is 65 bytes ``r(32) || s(32) || v(1)`` with v in {0, 1}, made over a 32-byte hash,
  so the signer's address is recovered, never sent on trust.
"""

from __future__ import annotations

import re
import secrets

import coincurve
from eth_hash.backends.pycryptodome import CryptodomeBackend

from chrnode.errors import CryptoError

__all__ = [
    "ADDRESS_LENGTH",
    "HASH_LENGTH",
    "SIGNATURE_LENGTH",
    "PrivateKey",
    "address_of_public_key",
    "keccak256",
    "parse_address",
    "recover_address",
    "to_hex_address",
]

ADDRESS_LENGTH = 20
HASH_LENGTH = 32
SIGNATURE_LENGTH = 65
SECRET_LENGTH = 32

# Order of the secp256k1 group: a private key is an integer in [1, N - 1].
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# bytes.fromhex tolerates spaces between bytes; identifiers must be exactly hex digits.
_HEX = re.compile(r"[0-9a-fA-F]*")

# eth-hash with the pycryptodome backend, named explicitly so no other backend is picked at random.
_KECCAK = CryptodomeBackend()


def keccak256(data: bytes | bytearray | memoryview) -> bytes:
    """Ethereum Keccak-256 of ``data`` (32 bytes)."""
    return _KECCAK.keccak256(bytes(data) if isinstance(data, memoryview) else data)


def address_of_public_key(public_key: bytes) -> bytes:
    """The 20-byte address of a 64-byte uncompressed public key (x || y, without the 0x04 prefix)."""
    if len(public_key) != 64:
        raise CryptoError(f"public key must be 64 bytes (x || y, no 0x04), got {_got(public_key)}")
    return keccak256(public_key)[-ADDRESS_LENGTH:]


def _got(value: object) -> str:
    """How a wrong value looks, for error messages: its length if it is bytes, else its type."""
    return f"{len(value)} bytes" if isinstance(value, bytes | bytearray) else type(value).__name__


def _check_hash(digest: bytes) -> None:
    if not isinstance(digest, bytes | bytearray) or len(digest) != HASH_LENGTH:
        raise CryptoError(f"message hash must be {HASH_LENGTH} bytes, got {_got(digest)}")


class PrivateKey:
    """A secp256k1 private key and its Ethereum address; build with generate/from_bytes/from_hex."""

    __slots__ = ("_address", "_key", "_public_key")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes | bytearray) or len(secret) != SECRET_LENGTH:
            raise CryptoError(f"private key must be {SECRET_LENGTH} bytes, got {_got(secret)}")
        value = int.from_bytes(secret, "big")
        if not 0 < value < SECP256K1_N:
            raise CryptoError("private key is out of range: must be in [1, n-1] of the secp256k1 group")
        try:
            self._key = coincurve.PrivateKey(bytes(secret))
        except ValueError as exc:
            raise CryptoError(f"private key rejected by secp256k1: {exc}") from exc
        self._public_key: bytes = self._key.public_key.format(compressed=False)[1:]
        self._address: bytes = address_of_public_key(self._public_key)

    @classmethod
    def generate(cls) -> PrivateKey:
        """A fresh key from the operating system's CSPRNG."""
        while True:
            secret = secrets.token_bytes(SECRET_LENGTH)
            if 0 < int.from_bytes(secret, "big") < SECP256K1_N:
                return cls(secret)

    @classmethod
    def from_bytes(cls, secret: bytes) -> PrivateKey:
        """A key from its 32 raw bytes."""
        return cls(secret)

    @classmethod
    def from_hex(cls, text: str) -> PrivateKey:
        """A key from 64 hex digits, with or without a 0x prefix, surrounding whitespace ignored."""
        body = text.strip()
        if body[:2].lower() == "0x":
            body = body[2:]
        if len(body) != 2 * SECRET_LENGTH:
            raise CryptoError(f"private key must be {2 * SECRET_LENGTH} hex digits, got {len(body)} chars")
        if not _HEX.fullmatch(body):
            raise CryptoError("private key must be hex digits 0-9a-f only")
        return cls(bytes.fromhex(body))

    def to_bytes(self) -> bytes:
        """The 32 raw secret bytes. Handle with care."""
        return bytes(self._key.secret)

    def to_hex(self) -> str:
        """The secret as 64 lowercase hex digits (the key file format)."""
        return self.to_bytes().hex()

    @property
    def public_key(self) -> bytes:
        """The 64-byte uncompressed public key, without the 0x04 prefix."""
        return self._public_key

    @property
    def address(self) -> bytes:
        """The 20-byte Ethereum address of this key."""
        return self._address

    @property
    def hex_address(self) -> str:
        """The EIP-55 checksummed 0x address of this key."""
        return to_hex_address(self._address)

    def sign_hash(self, digest: bytes) -> bytes:
        """Sign a 32-byte hash: 65 bytes r || s || v, low-s (libsecp256k1 always normalizes), v in {0, 1}."""
        _check_hash(digest)
        signature: bytes = self._key.sign_recoverable(bytes(digest), hasher=None)
        if signature[64] > 1:
            # recid 2/3 means r overflowed the group order: probability ~2^-127, never seen in practice.
            raise CryptoError("signature has recovery id > 1, which Ethereum's ecrecover cannot use")
        return signature

    def __repr__(self) -> str:
        # Never print the secret.
        return f"PrivateKey(address={self.hex_address})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and secrets.compare_digest(self.to_bytes(), other.to_bytes())

    def __hash__(self) -> int:
        return hash(self._address)


def recover_address(digest: bytes, signature: bytes) -> bytes:
    """The 20-byte address that made ``signature`` (65 bytes r||s||v, v in {0,1}) over ``digest``.

    Raises CryptoError when the signature is malformed or no public key can be recovered. A valid
    recovery to some other address is not an error here: callers compare with what they expected.
    """
    _check_hash(digest)
    if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_LENGTH:
        raise CryptoError(f"signature must be {SIGNATURE_LENGTH} bytes r||s||v, got {_got(signature)}")
    if signature[64] not in (0, 1):
        raise CryptoError(f"signature recovery id v must be 0 or 1, got {signature[64]}")
    try:
        public = coincurve.PublicKey.from_signature_and_message(bytes(signature), bytes(digest), hasher=None)
    except Exception as exc:  # coincurve raises ValueError or its own errors depending on the failure
        raise CryptoError(f"signature does not recover to a public key: {exc}") from exc
    return address_of_public_key(public.format(compressed=False)[1:])


def to_hex_address(address: bytes) -> str:
    """The EIP-55 mixed-case checksummed ``0x`` form of a 20-byte address."""
    if not isinstance(address, bytes | bytearray) or len(address) != ADDRESS_LENGTH:
        raise CryptoError(f"address must be {ADDRESS_LENGTH} bytes, got {_got(address)}")
    lower = bytes(address).hex()
    # EIP-55: upper-case a hex letter where the matching nibble of keccak(lowercase hex) is >= 8.
    nibbles = keccak256(lower.encode("ascii")).hex()[: len(lower)]
    return "0x" + "".join(c.upper() if int(h, 16) >= 8 else c for c, h in zip(lower, nibbles, strict=True))


def parse_address(text: str) -> bytes:
    """20 bytes from ``0x`` + 40 hex digits in any case (the checksum is not enforced)."""
    if not isinstance(text, str):
        raise CryptoError(f"address must be a string '0x' + 40 hex digits, got {type(text).__name__}")
    body = text.strip()
    if body[:2] not in ("0x", "0X"):
        raise CryptoError(f"address {text!r} must start with 0x followed by 40 hex digits")
    body = body[2:]
    if len(body) != 2 * ADDRESS_LENGTH:
        raise CryptoError(f"address {text!r} must have 40 hex digits after 0x, got {len(body)}")
    if not _HEX.fullmatch(body):
        raise CryptoError(f"address {text!r} must contain only hex digits 0-9a-f after 0x")
    return bytes.fromhex(body)
