"""Signed objects, the values of the DHT (SPEC 6). Pure code: a map in, a checked object out.

A signed object is the msgpack map

    {kind, key (20 B), signer (20 B), seq (int), expires (int, unix seconds), data (map),
     signature (65 B)}

``signature`` is over keccak256 of the *canonical* msgpack of the same map without
``signature``: map keys sorted at every level (str keys by code point, which is their UTF-8 byte
order), byte strings as bin, integers in their shortest form, no floats (a float has two msgpack
widths, so its bytes would depend on the packer). It must recover to ``signer``.

This module checks the shape and the signature only; what a kind's key and data must be (a
``node`` object names itself, a ``location`` object carries the device's ticket) is
:mod:`chrnode.objects.kinds`, and which of two objects for one key is kept is
:mod:`chrnode.objects.store`.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgpack

from chrnode.crypto import ADDRESS_LENGTH, SIGNATURE_LENGTH, PrivateKey, keccak256, recover_address
from chrnode.errors import CryptoError
from chrnode.objects.errors import BAD_PAYLOAD, BAD_SIGNATURE, ObjectError

__all__ = ["MAX_DATA_DEPTH", "MAX_OBJECT_BYTES", "SignedObject", "canonical_bytes"]

MAX_UINT64 = 0xFFFF_FFFF_FFFF_FFFF
MAX_KIND = 32
MAX_DATA_DEPTH = 8  # node and location data nest 3 deep; anything deeper is not ours
MAX_OBJECT_BYTES = 16 * 1024  # a location carries one ticket; 16 KiB is generous
WIRE_FIELDS = ("kind", "key", "signer", "seq", "expires", "data", "signature")
VERIFIED_CACHE = 8192  # node objects recur in every FIND answer: verify each one once

# signature -> the verified object. A hit still compares every field with the one received, so
# a signature copied onto other content misses and is verified (and refused) in full.
_verified: OrderedDict[bytes, SignedObject] = OrderedDict()


def _canonical(value: Any, depth: int) -> Any:
    """``value`` rebuilt with sorted maps, checked for types that have one msgpack encoding."""
    if depth > MAX_DATA_DEPTH:
        raise ObjectError(BAD_PAYLOAD, f"object data nests deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ObjectError(BAD_PAYLOAD, "object data maps must have string keys")
        return {k: _canonical(value[k], depth + 1) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(item, depth + 1) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value <= MAX_UINT64:
            raise ObjectError(BAD_PAYLOAD, "object integers must fit in 64 bits")
        return value
    raise ObjectError(BAD_PAYLOAD, f"object data may not hold {type(value).__name__} values")


def canonical_bytes(fields: dict[str, Any]) -> bytes:
    """The canonical msgpack of ``fields`` (SPEC 6): sorted keys at every level, bytes as bin."""
    packed: bytes = msgpack.packb(_canonical(fields, 0), use_bin_type=True)
    return packed


@dataclass(frozen=True, slots=True)
class SignedObject:
    """One DHT value. Construct with :meth:`sign` or :meth:`from_wire`, both of which check it."""

    kind: str
    key: bytes
    signer: bytes
    seq: int
    expires: int
    data: dict[str, Any]
    signature: bytes = b""

    def unsigned_fields(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "signer": self.signer,
            "seq": self.seq,
            "expires": self.expires,
            "data": self.data,
        }

    def digest(self) -> bytes:
        """keccak256 of the canonical msgpack of the map without ``signature``."""
        return keccak256(canonical_bytes(self.unsigned_fields()))

    def to_wire(self) -> dict[str, Any]:
        return {**self.unsigned_fields(), "signature": self.signature}

    def encoded_size(self) -> int:
        return len(canonical_bytes(self.to_wire()))

    def is_expired(self, now: float) -> bool:
        return self.expires <= now

    @classmethod
    def sign(
        cls, key_pair: PrivateKey, *, kind: str, key: bytes, seq: int, expires: int, data: dict[str, Any]
    ) -> SignedObject:
        """A new object signed by ``key_pair`` (its address becomes ``signer``)."""
        unsigned = cls(kind, bytes(key), key_pair.address, seq, expires, data)
        _check_shape(unsigned)
        return dataclasses.replace(unsigned, signature=key_pair.sign_hash(unsigned.digest()))

    @classmethod
    def from_wire(cls, obj: object) -> SignedObject:
        """A checked object from its msgpack map: shape, sizes, then the signature.

        Raises ObjectError with ``bad_payload`` (shape) or ``bad_signature`` (the signature is
        malformed or recovers to another address than ``signer``).
        """
        if not isinstance(obj, dict):
            raise ObjectError(BAD_PAYLOAD, f"an object must be a map, got {type(obj).__name__}")
        signature = obj.get("signature")
        if isinstance(signature, bytes):
            hit = _verified.get(signature)
            if hit is not None and _same(hit, obj):
                _verified.move_to_end(signature)
                return hit
        missing = [name for name in WIRE_FIELDS if name not in obj]
        if missing:
            raise ObjectError(BAD_PAYLOAD, f"object fields missing: {', '.join(missing)}")
        made = cls(
            kind=obj["kind"],
            key=obj["key"],
            signer=obj["signer"],
            seq=obj["seq"],
            expires=obj["expires"],
            data=obj["data"],
            signature=obj["signature"],
        )
        _check_shape(made)
        if not isinstance(made.signature, bytes) or len(made.signature) != SIGNATURE_LENGTH:
            raise ObjectError(BAD_PAYLOAD, f"object signature must be {SIGNATURE_LENGTH} bytes of bin")
        if made.encoded_size() > MAX_OBJECT_BYTES:
            raise ObjectError(BAD_PAYLOAD, f"object is over {MAX_OBJECT_BYTES} bytes")
        try:
            signer = recover_address(made.digest(), made.signature)
        except CryptoError as exc:
            raise ObjectError(BAD_SIGNATURE, f"object signature is invalid: {exc}") from exc
        if signer != made.signer:
            raise ObjectError(
                BAD_SIGNATURE,
                f"object signature recovers to 0x{signer.hex()}, not its signer 0x{made.signer.hex()}",
            )
        _verified[made.signature] = made
        if len(_verified) > VERIFIED_CACHE:
            _verified.popitem(last=False)
        return made


def _same(obj: SignedObject, wire: dict[Any, Any]) -> bool:
    """Whether ``wire`` carries exactly ``obj``'s fields (types included: True is not 1)."""
    return (
        len(wire) == len(WIRE_FIELDS)
        and type(wire.get("seq")) is int
        and type(wire.get("expires")) is int
        and wire.get("kind") == obj.kind
        and wire.get("key") == obj.key
        and wire.get("signer") == obj.signer
        and wire.get("seq") == obj.seq
        and wire.get("expires") == obj.expires
        and _deep_equal(wire.get("data"), obj.data)
    )


def _deep_equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _check_shape(obj: SignedObject) -> None:
    if not isinstance(obj.kind, str) or not 0 < len(obj.kind) <= MAX_KIND:
        raise ObjectError(BAD_PAYLOAD, f"object kind must be a string of 1..{MAX_KIND} characters")
    for name in ("key", "signer"):
        value = getattr(obj, name)
        if not isinstance(value, bytes) or len(value) != ADDRESS_LENGTH:
            raise ObjectError(BAD_PAYLOAD, f"object {name} must be {ADDRESS_LENGTH} bytes of bin")
    for name in ("seq", "expires"):
        value = getattr(obj, name)
        if type(value) is not int or not 0 <= value <= MAX_UINT64:
            raise ObjectError(BAD_PAYLOAD, f"object {name} must be an integer 0..2^64-1")
    if not isinstance(obj.data, dict):
        raise ObjectError(BAD_PAYLOAD, "object data must be a map")
    _canonical(obj.data, 1)
