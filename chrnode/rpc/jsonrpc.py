"""A pure JSON-RPC 2.0 dispatcher (SPEC 8): request bytes in, response bytes out, no I/O.

The transport (``chrnode.rpc.server``) hands over the raw body and whether the caller showed the
admin token; :meth:`Dispatcher.dispatch_body` answers with the bytes to send, or ``None`` when
nothing is to be sent (the body held notifications only).

It follows https://www.jsonrpc.org/specification to the letter:

- a body that is not JSON (or not UTF-8, or holds NaN/Infinity) is -32700 with id null;
- a request is an object with exactly the members ``jsonrpc`` ("2.0"), ``method`` (string),
  optional ``params`` (array or object) and optional ``id`` (string, number or null); anything
  else, including unknown members, is -32600 (the id is echoed when it could be read);
- a request without ``id`` is a notification: it runs, and gets no answer even if it fails;
- a batch is a non-empty array; an empty one is a single -32600; a batch of notifications
  answers nothing; at most ``max_batch`` requests per batch, at most ``max_body`` bytes per body;
- unknown method -32601; params of the wrong shape or type -32602 with ``data`` naming the
  parameter and the expected type; an unexpected handler failure -32603 (logged, never leaked).

The error codes (with our own, -32001..-32003), the strict JSON decoder and encoder, ``RawJson``,
the depth limit and the response objects are in ``chrnode.rpc.wire``; this module holds what a
method declares (``Param``, ``Method``) and the ``Dispatcher`` that checks requests and routes them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from chrnode.errors import RpcError
from chrnode.rpc.wire import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_DEPTH,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    TIMED_OUT,
    UNAUTHORIZED,
    UNAUTHORIZED_MESSAGE,
    decode_json,
    error_response,
    internal_error_response,
    json_type_name,
    result_response,
    rpc_error_response,
    too_deep,
)

log = logging.getLogger("chrnode.rpc")

# JSON Schema type names a parameter may declare, and the check each one stands for. bool is a
# subclass of int in Python, so it is excluded from the numeric types explicitly.
PARAM_TYPES: Mapping[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "any": lambda v: True,
}

_REQUEST_MEMBERS = frozenset(("jsonrpc", "method", "params", "id"))
_MISSING: Any = object()


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Param(NamedTuple):
    """One parameter of a method: its name, JSON Schema type (a key of PARAM_TYPES), whether it
    must be given, a sentence for the OpenRPC document, and for an integer its range (inclusive).

    An integer param without a declared range still gets the signed 64-bit one: JSON integers
    have no size, and one that SQLite or a struct cannot hold must be -32602 at once, not a
    failure deep in an actor (issue 8)."""

    name: str
    type: str
    required: bool = True
    description: str = ""
    minimum: int | None = None
    maximum: int | None = None

    def bounds(self) -> tuple[int, int]:
        """The inclusive range of an integer param."""
        low = INT64_MIN if self.minimum is None else self.minimum
        high = INT64_MAX if self.maximum is None else self.maximum
        return low, high


Handler = Callable[..., object]


@dataclass(frozen=True)
class Method:
    """A JSON-RPC method: `handler` is called with the params as keyword arguments and returns a
    JSON-serializable value, a RawJson, or an awaitable of either."""

    name: str
    handler: Handler
    params: tuple[Param, ...] = ()
    result: str = ""
    admin: bool = False
    summary: str = ""
    result_schema: Mapping[str, object] = field(default_factory=lambda: {"type": "object"})

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"method {self.name!r}: duplicate param names in {names}")
        for p in self.params:
            if p.type not in PARAM_TYPES:
                raise ValueError(
                    f"method {self.name!r}: param {p.name!r} has unknown type {p.type!r}; "
                    f"expected one of {sorted(PARAM_TYPES)}"
                )
        seen_optional = False
        for p in self.params:
            if not p.required:
                seen_optional = True
            elif seen_optional:
                # By-position calls could not skip the optional one to reach a later required one.
                raise ValueError(f"method {self.name!r}: required param {p.name!r} follows an optional one")


class _Pending(NamedTuple):
    """A request whose handler returned an awaitable; finished by Dispatcher._finish."""

    rid: object
    method: str
    awaitable: Awaitable[object]


class Dispatcher:
    """Routes JSON-RPC bodies to a fixed table of methods. Build it once; it is stateless per call."""

    def __init__(
        self,
        methods: Iterable[Method],
        *,
        max_body: int = 1048576,
        max_batch: int = 100,
        handler_timeout: float = 30.0,
    ) -> None:
        table: dict[str, Method] = {}
        for m in methods:
            if m.name in table:
                raise ValueError(f"method {m.name!r} is defined twice")
            table[m.name] = m
        self.methods: Mapping[str, Method] = table
        self.max_body = max_body
        self.max_batch = max_batch
        self.handler_timeout = handler_timeout

    # -- public entry points -------------------------------------------------------------------

    async def dispatch_body(self, body: bytes, *, is_admin: bool) -> bytes | None:
        """Answer one HTTP body: the response bytes, or None when only notifications came in."""
        if len(body) > self.max_body:
            return self.too_large(len(body)).encode()
        if too_deep(body):
            return error_response(
                None,
                PARSE_ERROR,
                f"parse error: body is not valid JSON (nested deeper than {MAX_DEPTH} levels)",
            ).encode()
        try:
            doc = decode_json(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return error_response(
                None, PARSE_ERROR, f"parse error: body is not UTF-8 ({exc.reason} at byte {exc.start})"
            ).encode()
        except (ValueError, RecursionError) as exc:
            return error_response(
                None, PARSE_ERROR, f"parse error: body is not valid JSON ({_short(exc)})"
            ).encode()

        if type(doc) is list:
            return await self._batch(doc, is_admin)
        answer = self._start(doc, is_admin)
        if isinstance(answer, _Pending):
            answer = await self._finish(answer)
        return None if answer is None else answer.encode()

    def too_large(self, size: int) -> str:
        """The -32600 answer for a body over the limit (also sent by the HTTP layer unread)."""
        return error_response(
            None,
            INVALID_REQUEST,
            f"invalid request: body is {size} bytes; the limit is rpc_max_body = {self.max_body} bytes",
            {"limit": "rpc_max_body", "max": self.max_body, "got": size},
        )

    # -- internals -----------------------------------------------------------------------------

    async def _batch(self, items: list[object], is_admin: bool) -> bytes | None:
        if not items:
            return error_response(
                None, INVALID_REQUEST, "invalid request: empty batch; send at least one request"
            ).encode()
        if len(items) > self.max_batch:
            return error_response(
                None,
                INVALID_REQUEST,
                f"invalid request: batch has {len(items)} requests; "
                f"the limit is rpc_max_batch = {self.max_batch}",
                {"limit": "rpc_max_batch", "max": self.max_batch, "got": len(items)},
            ).encode()
        parts: list[str] = []
        # Sequential on purpose: answers keep the order of the requests, and the only async
        # handlers are admin operations, which are rare and should not race each other.
        for item in items:
            answer = self._start(item, is_admin)
            if isinstance(answer, _Pending):
                answer = await self._finish(answer)
            if answer is not None:
                parts.append(answer)
        if not parts:
            return None
        return ("[" + ",".join(parts) + "]").encode()

    def _start(self, req: object, is_admin: bool) -> str | _Pending | None:
        """Validate and run one request. A str is the answer, None means no answer (notification),
        a _Pending still has to be awaited."""
        if type(req) is not dict:
            return error_response(
                None,
                INVALID_REQUEST,
                f"invalid request: each request must be a JSON object, got {json_type_name(req)}",
            )
        rid = req.get("id", _MISSING)
        if rid is not _MISSING and rid is not None and type(rid) not in (str, int, float):
            return error_response(
                None,
                INVALID_REQUEST,
                f"invalid request: id must be a string, a number or null, got {json_type_name(rid)}",
            )
        echo = None if rid is _MISSING else rid
        if req.get("jsonrpc") != "2.0":
            return error_response(
                echo, INVALID_REQUEST, 'invalid request: member "jsonrpc" must be exactly "2.0"'
            )
        name = req.get("method")
        if type(name) is not str:
            return error_response(
                echo,
                INVALID_REQUEST,
                f'invalid request: member "method" must be a string, got {json_type_name(name)}',
            )
        if len(req) > 2 and not _REQUEST_MEMBERS.issuperset(req):
            extra = sorted(set(req) - _REQUEST_MEMBERS)
            return error_response(
                echo,
                INVALID_REQUEST,
                f"invalid request: unknown member(s) {', '.join(repr(k[:40]) for k in extra[:5])}; "
                "a request has only jsonrpc, method, params and id",
            )
        params = req.get("params", _MISSING)
        if params is not _MISSING and type(params) is not list and type(params) is not dict:
            return error_response(
                echo,
                INVALID_REQUEST,
                f'invalid request: member "params" must be an array or an object, '
                f"got {json_type_name(params)}",
            )
        notification = rid is _MISSING

        method = self.methods.get(name)
        if method is None:
            if notification:
                return None
            return error_response(
                rid,
                METHOD_NOT_FOUND,
                f"method not found: {name[:100]!r}; call rpc.discover for the list",
                {"method": name[:100]},
            )
        if method.admin and not is_admin:
            return None if notification else error_response(rid, UNAUTHORIZED, UNAUTHORIZED_MESSAGE)

        try:
            if not method.params and (params is _MISSING or not params):
                result = method.handler()  # the common case: a read method without params
            else:
                result = method.handler(**_bind(method, params))
        except RpcError as exc:
            return None if notification else rpc_error_response(rid, exc)
        except Exception:
            log.exception("JSON-RPC method %s failed", name)
            return None if notification else internal_error_response(rid, name)

        if inspect.isawaitable(result):
            return _Pending(rid, name, result)
        return None if notification else result_response(rid, name, result)

    async def _finish(self, pending: _Pending) -> str | None:
        rid, name = pending.rid, pending.method
        notification = rid is _MISSING
        try:
            result = await asyncio.wait_for(pending.awaitable, self.handler_timeout)
        except RpcError as exc:
            return None if notification else rpc_error_response(rid, exc)
        except TimeoutError:
            log.warning("JSON-RPC method %s did not answer within %g s", name, self.handler_timeout)
            return (
                None
                if notification
                else error_response(
                    rid, TIMED_OUT, f"method {name} did not answer within {self.handler_timeout:g} s"
                )
            )
        except Exception:
            log.exception("JSON-RPC method %s failed", name)
            return None if notification else internal_error_response(rid, name)
        return None if notification else result_response(rid, name, result)


def _bind(method: Method, params: object) -> dict[str, object]:
    """Map positional or named params onto the method's parameter names and check their types."""
    specs = method.params
    if params is _MISSING:
        given: dict[str, object] = {}
    elif type(params) is list:
        if len(params) > len(specs):
            names = ", ".join(p.name for p in specs) or "none"
            raise RpcError(
                INVALID_PARAMS,
                f"invalid params: {method.name} takes at most {len(specs)} params ({names}), "
                f"got {len(params)}",
                {"expected_count": len(specs), "got_count": len(params)},
            )
        given = {p.name: v for p, v in zip(specs, params, strict=False)}
    else:
        given = params  # type: ignore[assignment]
        unknown = [k for k in given if all(k != p.name for p in specs)]
        if unknown:
            raise RpcError(
                INVALID_PARAMS,
                f"invalid params: {method.name} has no param {unknown[0][:100]!r}; "
                f"its params are: {', '.join(p.name for p in specs) or 'none'}",
                {"param": unknown[0][:100], "allowed": [p.name for p in specs]},
            )
    for p in specs:
        if p.name not in given:
            if p.required:
                raise RpcError(
                    INVALID_PARAMS,
                    f"invalid params: missing required param {p.name!r} ({p.type})",
                    {"param": p.name, "expected": p.type, "got": "nothing"},
                )
            continue
        value = given[p.name]
        if not PARAM_TYPES[p.type](value):
            raise RpcError(
                INVALID_PARAMS,
                f"invalid params: param {p.name!r} must be {p.type}, got {json_type_name(value)}",
                {"param": p.name, "expected": p.type, "got": json_type_name(value)},
            )
        if p.type == "integer":
            low, high = p.bounds()
            if not low <= value <= high:  # type: ignore[operator]
                shown = str(value) if len(str(value)) <= 40 else f"an integer of {len(str(value))} digits"
                raise RpcError(
                    INVALID_PARAMS,
                    f"invalid params: param {p.name!r} must be an integer from {low} to {high}, got {shown}",
                    {"param": p.name, "expected": f"integer {low}..{high}", "got": shown},
                )
    return given


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
