"""JSON-RPC 2.0 on the wire (SPEC 8): the error codes, strict JSON in and out, the response objects.

Pure, no I/O, and nothing about methods: ``chrnode.rpc.jsonrpc`` (the dispatcher) decodes bodies
and builds its answers with what is here.

- ``decode_json`` reads JSON text strictly: NaN, Infinity and numbers out of the float range are
  errors; ``too_deep`` finds a body nested deeper than ``MAX_DEPTH`` before it is decoded.
- ``json_type_name`` names the JSON type of a decoded value, for error messages.
- ``encode_json`` writes compact JSON without NaN/Infinity; a ``RawJson`` result is spliced into
  the response as is.
- ``error_response``, ``rpc_error_response``, ``internal_error_response`` and ``result_response``
  give one response object as JSON text (the id echoed, ``data`` only when there is some).

Error codes: the specification's -32700 and -32600..-32603, and server errors of our own (range
-32000..-32099): -32001 admin token missing, -32002 an async handler did not answer in time,
-32003 an actor refused or failed an admin operation.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chrnode.errors import RpcError

log = logging.getLogger("chrnode.rpc")

_MISSING: Any = object()  # an error response without a data member

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNAUTHORIZED = -32001
TIMED_OUT = -32002
ACTOR_FAILED = -32003

# What an unauthenticated caller reads: how to authenticate, never where the data dir is (issue 8).
UNAUTHORIZED_MESSAGE = (
    "unauthorized: this method needs the admin token (Authorization: Bearer <token>; "
    "the node writes it to .cookie in its data dir at start)"
)


@dataclass(frozen=True)
class RawJson:
    """A result that is already serialized JSON text; spliced into the response as is, so a
    handler can cache the serialized form of what rarely changes."""

    text: str


def json_type_name(value: object) -> str:
    """The JSON type of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _reject_constant(token: str) -> object:
    raise ValueError(f"{token} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
decode_json: Callable[[str], Any] = _DECODER.decode
"""Strict JSON (no NaN/Infinity, no number out of the float range): how the dispatcher reads a body."""
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_encode = _ENCODER.encode
encode_json: Callable[[object], str] = _ENCODER.encode
"""Strict, compact JSON (no NaN/Infinity): what the dispatcher sends; for RawJson producers."""


MAX_DEPTH = 128
"""JSON-RPC needs a few levels; the C JSON decoder recurses per level and can overflow the C
stack of a thread long before Python's recursion limit stops it, so deep bodies are refused first."""


def too_deep(body: bytes) -> bool:
    """Whether the body nests arrays and objects deeper than MAX_DEPTH (strings not counted)."""
    # Cheap test first (counts run in C): only a body with many openers needs the exact scan.
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return False
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def error_response(rid: object, code: int, message: str, data: object = _MISSING) -> str:
    """An error response object; ``data`` is left out unless given."""
    err: dict[str, object] = {"code": code, "message": message}
    if data is not _MISSING:
        err["data"] = data
    return '{"jsonrpc":"2.0","id":' + _encode(rid) + ',"error":' + _encode(err) + "}"


def rpc_error_response(rid: object, exc: RpcError) -> str:
    """The error response for an RpcError a handler raised (without its data if that is not JSON)."""
    data = _MISSING if exc.data is None else exc.data
    try:
        return error_response(rid, exc.code, str(exc), data)
    except (TypeError, ValueError):
        log.error("RpcError %d carries data that is not JSON: %r", exc.code, exc.data)
        return error_response(rid, exc.code, str(exc))


def internal_error_response(rid: object, name: str) -> str:
    """The -32603 answer for method `name`: the details stay in the node log."""
    return error_response(
        rid, INTERNAL_ERROR, f"internal error while running {name}; the node log has the details"
    )


def result_response(rid: object, name: str, result: object) -> str:
    """The result response of method `name` (-32603 if the result is not JSON)."""
    if type(result) is RawJson:
        text = result.text
    else:
        try:
            text = _encode(result)
        except (TypeError, ValueError):
            log.exception("JSON-RPC method %s returned a result that is not JSON", name)
            return internal_error_response(rid, name)
    return '{"jsonrpc":"2.0","id":' + _encode(rid) + ',"result":' + text + "}"
