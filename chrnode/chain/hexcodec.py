"""Ethereum JSON-RPC value codecs: hex quantities, byte strings, addresses, revert data (SPEC 7).

Pure functions. Anything an endpoint sends that does not have the expected shape raises
`ChainError` naming what was expected, so a broken endpoint never surfaces as a TypeError.
"""

from __future__ import annotations

import re

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError

from chrnode.errors import ChainError

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)

_HEX_RE = re.compile(r"0x[0-9a-fA-F]*\Z")
_ADDRESS_RE = re.compile(r"(0x)?[0-9a-fA-F]{40}\Z")


def parse_quantity(value: object, what: str) -> int:
    """A JSON-RPC quantity ("0x1a") as int."""
    if not isinstance(value, str) or not _HEX_RE.match(value) or len(value) < 3:
        raise ChainError(f"{what}: got {value!r}; expected a 0x-prefixed hex quantity")
    return int(value, 16)


def parse_data(value: object, what: str) -> bytes:
    """JSON-RPC data ("0xdeadbeef") as bytes."""
    if not isinstance(value, str) or not _HEX_RE.match(value) or len(value) % 2:
        raise ChainError(f"{what}: got {_short(value)}; expected 0x-prefixed hex data of whole bytes")
    return bytes.fromhex(value[2:])


def parse_address(value: object, what: str) -> bytes:
    """A 20-byte address from its 0x-hex form, as sent by an endpoint."""
    raw = parse_data(value, what)
    if len(raw) != 20:
        raise ChainError(f"{what}: got {_short(value)}; expected a 20-byte address")
    return raw


def address_bytes(address: bytes | str) -> bytes:
    """Normalise an address given by a caller (20 bytes or 40 hex digits, 0x optional) to bytes."""
    if isinstance(address, bytes | bytearray):
        if len(address) != 20:
            raise ValueError(f"address must be 20 bytes, got {len(address)}")
        return bytes(address)
    if not isinstance(address, str) or not _ADDRESS_RE.match(address):
        raise ValueError(f"address must be 20 bytes or 40 hex digits, got {address!r}")
    return bytes.fromhex(address[2:] if address.startswith("0x") else address)


def hex_address(address: bytes | str) -> str:
    return "0x" + address_bytes(address).hex()


def hex_data(data: bytes) -> str:
    return "0x" + data.hex()


def hex_quantity(value: int) -> str:
    if value < 0:
        raise ValueError(f"a quantity cannot be negative: {value}")
    return hex(value)


def decode_revert(data: bytes) -> str | None:
    """The reason of an Error(string) or Panic(uint256) revert, or None for anything else."""
    try:
        if data[:4] == ERROR_STRING_SELECTOR:
            (reason,) = abi_decode(["string"], data[4:])
            return str(reason)
        if data[:4] == PANIC_SELECTOR:
            (code,) = abi_decode(["uint256"], data[4:])
            return f"Panic(0x{code:02x})"
    except (DecodingError, UnicodeDecodeError, OverflowError):
        return None
    return None


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
