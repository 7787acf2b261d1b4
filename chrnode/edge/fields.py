"""Field kinds of the EdgeV2 messages (SPEC 4): validators of msgpack values, pure.

Each kind checks one value as decoded by msgpack (bin, not str, for bytes; exact sizes for
addresses and signatures; integer ranges) and returns it, or raises `InvalidField` saying what
was wrong and what was expected; chrnode.edge.messages turns that into a protocol error naming
the field.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import MISSING, field
from typing import Any

from chrnode.edge import codes
from chrnode.errors import RemoteProtocolError
from chrnode.ticket import Ticket

MAX_UINT64 = 0xFFFF_FFFF_FFFF_FFFF
MAX_STORED_INT = 0x7FFF_FFFF_FFFF_FFFF  # SQLite INTEGER (SPEC 10): what the TicketStore can keep
MAX_NAME = 255  # BNS names and string ports
MAX_KEY = 256  # getobject keys
MAX_TEXT = 4096  # error and notify messages
_STORED_TICKET_INTS = ("chain_id", "epoch", "total_connections", "total_bytes")


# --- field kinds ----------------------------------------------------------------------------------
class InvalidField(Exception):
    """A field value is wrong; becomes a Remote/LocalProtocolError naming the field."""


Kind = Callable[[Any], Any]


def uint(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_UINT64:
        raise InvalidField(f"must be an integer 0..2^64-1, got {show(value)}")
    return value


def bin_of(size: int | None = None, max_size: int | None = None) -> Kind:
    def check(value: Any) -> bytes:
        if not isinstance(value, bytes):
            raise InvalidField(f"must be msgpack bin, got {show(value)}")
        if size is not None and len(value) != size:
            raise InvalidField(f"must be exactly {size} bytes, got {len(value)}")
        if max_size is not None and len(value) > max_size:
            raise InvalidField(f"must be at most {max_size} bytes, got {len(value)}")
        return value

    return check


def text_of(max_len: int, min_len: int = 0) -> Kind:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise InvalidField(f"must be a msgpack str, got {show(value)}")
        if not min_len <= len(value) <= max_len:
            raise InvalidField(f"must be {min_len}..{max_len} characters, got {len(value)}")
        return value

    return check


def boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise InvalidField(f"must be a msgpack bool, got {show(value)}")
    return value


def port(value: Any) -> int | str:
    if type(value) is int and 0 <= value <= 0xFFFF:
        return value
    if isinstance(value, str) and 0 < len(value) <= MAX_NAME:
        return value
    raise InvalidField(f"must be an integer 0..65535 or a non-empty string, got {show(value)}")


def port_flags(value: Any) -> str:
    # SPEC 4: "rw" (default), "r" or "w", plus "s" for shared; each letter at most once.
    if not isinstance(value, str) or not set(value) <= set("rws") or len(set(value)) != len(value):
        raise InvalidField(f"must be letters from 'rws', each at most once, got {show(value)}")
    if not set(value) & set("rw"):
        raise InvalidField(f"must allow at least one direction ('r' or 'w'), got {value!r}")
    return value


def error_code(value: Any) -> str:
    if not codes.is_valid_code(value):
        raise InvalidField(f"must be a snake_case error code, got {show(value)}")
    return str(value)


def string_map(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InvalidField(f"must be a map with string keys, got {show(value)}")
    return value


def ticket(value: Any) -> Ticket:
    if isinstance(value, Ticket):  # encoding side: validate what to_wire produced
        value = value.to_wire()
    try:
        parsed = Ticket.from_wire(value)
    except RemoteProtocolError as exc:
        raise InvalidField(str(exc)) from exc
    for name in _STORED_TICKET_INTS:
        number = getattr(parsed, name)
        if number > MAX_STORED_INT:
            # SPEC 10: the TicketStore keeps tickets in SQLite, whose integers are signed 64-bit;
            # a larger value could never be stored, so it is refused here, before any actor sees it.
            raise InvalidField(f"ticket.{name} must be at most 2^63-1, got {number}")
    return parsed


address = bin_of(20)
signature = bin_of(65)


def show(value: Any) -> str:
    """A short description of a bad value for an error message (bounded work on any input)."""
    text = _SHORT.repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


_SHORT = reprlib.Repr()
_SHORT.maxlevel = 2
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 40


def wire_field(kind: Kind, default: Any = MISSING) -> Any:
    """A wire field: its kind, and its default when the key may be absent."""
    return field(default=default, metadata={"kind": kind})
