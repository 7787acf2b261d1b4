"""Bounds of a decoded EdgeV2 payload (SPEC 4), checked before any field is read, shown or stored.

A frame's length is bounded by the frame limit; inside it, msgpack could still hold a thousand
nested arrays (Python's ``repr`` of them recurses past its limit), ext types (msgpack turns type -1
into Timestamp objects) or maps of a hundred thousand keys. :func:`unpack` decodes with msgpack's
own limits where they fit (``max_*_len``, no ext at all) and then checks the nesting depth with an
explicit stack, so no later step ever recurses over attacker-shaped data.

Integer ranges are per field (chrnode.edge.fields): every integer on the wire fits 64 bits
unsigned, and the integers that are stored (ticket fields) fit SQLite's signed 64 bits.
"""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "PayloadError", "unpack"]

# The deepest payload of SPEC 4 and 6 is a STORE: payload -> object -> data -> ticket (depth 4),
# with lists of node objects one level more; 16 leaves room for later fields.
MAX_DEPTH = 16
# No message has a list or map of more than k = 20 node objects or a MERKLE item list; a map of
# string keys larger than this is an attack, not a message.
MAX_ITEMS = 4096


class PayloadError(ValueError):
    """The payload is not msgpack, or not within the bounds above; the text says which.

    ``value`` is the decoded object when msgpack could decode it (too deep for us, not for msgpack),
    so that the caller can still read a request ``id`` for its error answer."""

    def __init__(self, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.value = value


def unpack(payload: bytes | bytearray | memoryview) -> Any:
    """The msgpack value of ``payload``, bounded; PayloadError otherwise."""
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
            max_ext_len=0,  # SPEC 4 payloads have no ext types
        )
    except msgpack.StackError as exc:  # msgpack's own stack (1024 levels) ran out
        raise PayloadError(f"nests deeper than {MAX_DEPTH} levels") from exc
    except Exception as exc:  # msgpack raises ValueError subclasses, TypeError, ...
        raise PayloadError(f"is not valid msgpack: {exc or type(exc).__name__}") from exc
    try:
        check_depth(obj)
    except PayloadError as exc:
        raise PayloadError(str(exc), obj) from None
    return obj


def check_depth(obj: Any, limit: int = MAX_DEPTH) -> None:
    """PayloadError if maps and lists in ``obj`` nest deeper than ``limit`` (the top level is 1)."""
    if type(obj) is not dict and type(obj) is not list:
        return
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise PayloadError(f"nests deeper than {limit} levels")
        children = value.values() if type(value) is dict else value
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
