"""The hello proof: a device proves its key inside the TLS session (SPEC 3).

Python's ``ssl`` cannot accept self-signed client certificates, so the device's first message
claims its address and signs ``keccak256(tls_unique || node_address)``. tls-unique differs per TLS
session, so a proof replayed from another session (or made for another node) fails.
"""

from __future__ import annotations

from chrnode.crypto import ADDRESS_LENGTH, PrivateKey, keccak256, recover_address
from chrnode.edge import codes
from chrnode.errors import CryptoError, RemoteProtocolError

__all__ = ["hello_digest", "sign_hello", "verify_hello"]

# tls-unique is the first Finished message: 12 bytes for every TLS 1.2 suite we offer. Allow up to
# 64 for other PRFs, refuse empty (no handshake) outright.
MAX_TLS_UNIQUE = 64


def hello_digest(tls_unique: bytes, node_address: bytes) -> bytes:
    """keccak256(tls_unique || node_address), the hash the device signs."""
    if not 0 < len(tls_unique) <= MAX_TLS_UNIQUE:
        raise CryptoError(f"tls-unique must be 1..{MAX_TLS_UNIQUE} bytes, got {len(tls_unique)}")
    if len(node_address) != ADDRESS_LENGTH:
        raise CryptoError(f"node address must be {ADDRESS_LENGTH} bytes, got {len(node_address)}")
    return keccak256(bytes(tls_unique) + bytes(node_address))


def sign_hello(key: PrivateKey, tls_unique: bytes, node_address: bytes) -> bytes:
    """The device's 65-byte hello proof for this session and this node."""
    return key.sign_hash(hello_digest(tls_unique, node_address))


def verify_hello(claimed: bytes, signature: bytes, tls_unique: bytes, node_address: bytes) -> None:
    """Accept the hello only if ``signature`` recovers to ``claimed`` for this session and node.

    Raises RemoteProtocolError with code ``bad_signature`` (malformed, unrecoverable) or
    ``wrong_device`` (a valid signature by another key: wrong session, wrong node, or a false claim).
    The caller adds the request id to its error answer.
    """
    digest = hello_digest(tls_unique, node_address)
    try:
        signer = recover_address(digest, signature)
    except CryptoError as exc:
        raise RemoteProtocolError(f"hello signature is invalid: {exc}", codes.BAD_SIGNATURE) from exc
    if signer != claimed:
        raise RemoteProtocolError(
            f"hello proof for device 0x{bytes(claimed).hex()} recovers to 0x{signer.hex()}: it must sign "
            "keccak256(tls-unique of this session || this node's address) with the device's key",
            codes.WRONG_DEVICE,
        )
