"""The pure JSON-RPC 2.0 dispatcher against the specification (jsonrpc.org), bytes in, bytes out."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from chrnode.errors import RpcError
from chrnode.rpc.jsonrpc import Dispatcher, Method, Param
from chrnode.rpc.wire import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    TIMED_OUT,
    UNAUTHORIZED,
    UNAUTHORIZED_MESSAGE,
    RawJson,
)


def _subtract(minuend: int, subtrahend: int) -> int:
    return minuend - subtrahend


def _sum(*_: Any, a: int = 0, b: int = 0, c: int = 0) -> int:
    return a + b + c


async def _slow_echo(text: str, delay: float = 0.0) -> str:
    await asyncio.sleep(delay)
    return text


def _boom() -> None:
    raise ValueError("secret internal detail /etc/passwd")


def _custom_error() -> None:
    raise RpcError(-32050, "fleet says no", {"fleet": "0x00"})


def _not_json() -> object:
    return {1, 2}


async def _async_rpc_error() -> None:
    raise RpcError(-32003, "actor refused")


def _noop(**_: Any) -> None:
    return None


METHODS = [
    Method("subtract", _subtract, (Param("minuend", "integer"), Param("subtrahend", "integer"))),
    Method("sum", _sum, (Param("a", "integer"), Param("b", "integer"), Param("c", "integer", False))),
    Method(
        "update",
        _noop,
        (
            Param("a", "any", False),
            Param("b", "any", False),
            Param("c", "any", False),
            Param("d", "any", False),
            Param("e", "any", False),
        ),
    ),
    Method("notify_hello", _noop, (Param("n", "integer", False),)),
    Method("get_data", lambda: ["hello", 5]),
    Method("echo", _slow_echo, (Param("text", "string"), Param("delay", "number", False))),
    Method("boom", _boom),
    Method("custom_error", _custom_error),
    Method("not_json", _not_json),
    Method("async_error", _async_rpc_error),
    Method("raw", lambda: RawJson('{"cached":true}')),
    Method(
        "types",
        _noop,
        (
            Param("s", "string", False),
            Param("i", "integer", False),
            Param("n", "number", False),
            Param("b", "boolean", False),
            Param("o", "object", False),
            Param("a", "array", False),
        ),
    ),
    Method("secret", lambda: "admin only", admin=True),
]


def make(**kwargs: Any) -> Dispatcher:
    return Dispatcher(METHODS, **kwargs)


def call(body: bytes | str | object, *, admin: bool = False, d: Dispatcher | None = None) -> Any:
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    out = asyncio.run((d or make()).dispatch_body(body, is_admin=admin))
    return None if out is None else json.loads(out)


def err(answer: Any) -> tuple[int, Any]:
    assert set(answer) == {"jsonrpc", "id", "error"}, answer
    assert answer["jsonrpc"] == "2.0"
    return answer["error"]["code"], answer["id"]


# --- the specification's own examples (section 7) ---------------------------------------------------


def test_positional_params() -> None:
    assert call('{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}') == {
        "jsonrpc": "2.0",
        "result": 19,
        "id": 1,
    }
    assert call('{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}')["result"] == -19


def test_named_params() -> None:
    answer = call(
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}'
    )
    assert answer == {"jsonrpc": "2.0", "result": 19, "id": 3}


def test_notifications_get_no_answer() -> None:
    assert call('{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}') is None
    assert call('{"jsonrpc": "2.0", "method": "foobar"}') is None


def test_method_not_found() -> None:
    answer = call('{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
    assert err(answer) == (METHOD_NOT_FOUND, "1")
    assert "foobar" in answer["error"]["message"]
    assert answer["error"]["data"] == {"method": "foobar"}


def test_parse_error() -> None:
    answer = call('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert err(answer) == (PARSE_ERROR, None)
    assert "not valid JSON" in answer["error"]["message"]


def test_invalid_request_object() -> None:
    answer = call('{"jsonrpc": "2.0", "method": 1, "params": "bar"}')
    assert err(answer) == (INVALID_REQUEST, None)
    assert '"method" must be a string' in answer["error"]["message"]


def test_batch_with_invalid_json_is_one_parse_error() -> None:
    answer = call(
        '[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method"]'
    )
    assert err(answer) == (PARSE_ERROR, None)


def test_empty_batch_is_one_invalid_request() -> None:
    answer = call("[]")
    assert isinstance(answer, dict)
    assert err(answer) == (INVALID_REQUEST, None)
    assert "empty batch" in answer["error"]["message"]


def test_invalid_batch_of_one() -> None:
    answer = call("[1]")
    assert isinstance(answer, list) and len(answer) == 1
    assert err(answer[0]) == (INVALID_REQUEST, None)


def test_invalid_batch_of_three() -> None:
    answer = call("[1,2,3]")
    assert [err(a) for a in answer] == [(INVALID_REQUEST, None)] * 3


def test_mixed_batch() -> None:
    answer = call("""[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]""")
    assert answer[0] == {"jsonrpc": "2.0", "result": 7, "id": "1"}
    assert answer[1] == {"jsonrpc": "2.0", "result": 19, "id": "2"}
    assert err(answer[2]) == (INVALID_REQUEST, None)
    assert err(answer[3]) == (METHOD_NOT_FOUND, "5")
    assert answer[4] == {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}
    assert len(answer) == 5


def test_batch_of_notifications_answers_nothing() -> None:
    assert (
        call(
            '[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},'
            ' {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]'
        )
        is None
    )


# --- ids ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rid", ["abc", "", 0, -5, 2**70, 1.5, None])
def test_ids_are_echoed(rid: object) -> None:
    answer = call({"jsonrpc": "2.0", "method": "get_data", "id": rid})
    assert answer["id"] == rid and answer["result"] == ["hello", 5]


@pytest.mark.parametrize("rid", [True, False, [1], {"a": 1}])
def test_bad_id_types_are_invalid(rid: object) -> None:
    answer = call({"jsonrpc": "2.0", "method": "get_data", "id": rid})
    assert err(answer) == (INVALID_REQUEST, None)
    assert "id must be" in answer["error"]["message"]


def test_id_echoed_on_invalid_request_when_readable() -> None:
    assert err(call({"jsonrpc": "1.0", "method": "get_data", "id": 7})) == (INVALID_REQUEST, 7)


# --- invalid requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "req, fragment",
    [
        ({"method": "get_data", "id": 1}, '"jsonrpc" must be exactly "2.0"'),
        ({"jsonrpc": "1.0", "method": "get_data", "id": 1}, '"jsonrpc" must be exactly "2.0"'),
        ({"jsonrpc": 2.0, "method": "get_data", "id": 1}, '"jsonrpc" must be exactly "2.0"'),
        ({"jsonrpc": "2.0", "id": 1}, '"method" must be a string'),
        ({"jsonrpc": "2.0", "method": None, "id": 1}, '"method" must be a string'),
        (
            {"jsonrpc": "2.0", "method": "get_data", "params": "x", "id": 1},
            '"params" must be an array or an object',
        ),
        (
            {"jsonrpc": "2.0", "method": "get_data", "params": None, "id": 1},
            '"params" must be an array or an object',
        ),
        (
            {"jsonrpc": "2.0", "method": "get_data", "params": 3, "id": 1},
            '"params" must be an array or an object',
        ),
        ({"jsonrpc": "2.0", "method": "get_data", "id": 1, "extra": 1}, "unknown member(s) 'extra'"),
    ],
)
def test_invalid_requests(req: dict[str, Any], fragment: str) -> None:
    answer = call(req)
    code, _ = err(answer)
    assert code == INVALID_REQUEST
    assert fragment in answer["error"]["message"]


def test_invalid_request_without_id_is_still_answered() -> None:
    # Not a valid notification, so the spec wants an error (its example "method": 1 has no id).
    answer = call({"jsonrpc": "2.0", "method": "get_data", "params": "x"})
    assert err(answer) == (INVALID_REQUEST, None)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"", "not valid JSON"),
        (b"   ", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"jsonrpc": "2.0", "method": "sum", "params": [NaN, 1], "id": 1}', "NaN is not valid JSON"),
        (
            b'{"jsonrpc": "2.0", "method": "sum", "params": [Infinity, 1], "id": 1}',
            "Infinity is not valid JSON",
        ),
        (b'{"jsonrpc": "2.0", "method": "sum", "params": [1e999, 1], "id": 1}', "out of range"),
        (b"[" * 100000 + b"]" * 100000, "nested deeper than"),
        (b"[" * 129 + b"]" * 129, "nested deeper than"),
        (b'{"a": 1} {"b": 2}', "not valid JSON"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),
    ],
)
def test_parse_errors(body: bytes, fragment: str) -> None:
    answer = call(body)
    assert err(answer) == (PARSE_ERROR, None)
    assert fragment in answer["error"]["message"]


@pytest.mark.parametrize("scalar", ["1", '"x"', "null", "true"])
def test_scalar_body_is_invalid_request(scalar: str) -> None:
    assert err(call(scalar)) == (INVALID_REQUEST, None)


def test_nested_batch_is_invalid_element() -> None:
    answer = call('[[{"jsonrpc": "2.0", "method": "get_data", "id": 1}]]')
    assert [err(a) for a in answer] == [(INVALID_REQUEST, None)]


# --- limits ---------------------------------------------------------------------------------------------


def test_body_limit() -> None:
    d = make(max_body=100)
    body = json.dumps({"jsonrpc": "2.0", "method": "echo", "params": ["x" * 200], "id": 1})
    answer = call(body, d=d)
    assert err(answer) == (INVALID_REQUEST, None)
    assert "the limit is rpc_max_body = 100 bytes" in answer["error"]["message"]
    assert answer["error"]["data"]["got"] == len(body)


def test_batch_limit() -> None:
    d = make(max_batch=3)
    ok = [{"jsonrpc": "2.0", "method": "get_data", "id": i} for i in range(3)]
    assert len(call(ok, d=d)) == 3
    answer = call([*ok, {"jsonrpc": "2.0", "method": "get_data", "id": 9}], d=d)
    assert err(answer) == (INVALID_REQUEST, None)
    assert "batch has 4 requests; the limit is rpc_max_batch = 3" in answer["error"]["message"]


# --- params ---------------------------------------------------------------------------------------------


def test_too_many_positional_params() -> None:
    answer = call({"jsonrpc": "2.0", "method": "subtract", "params": [1, 2, 3], "id": 1})
    assert err(answer) == (INVALID_PARAMS, 1)
    assert "takes at most 2 params (minuend, subtrahend), got 3" in answer["error"]["message"]


def test_missing_required_param() -> None:
    answer = call({"jsonrpc": "2.0", "method": "subtract", "params": [1], "id": 1})
    assert err(answer) == (INVALID_PARAMS, 1)
    assert answer["error"]["data"] == {"param": "subtrahend", "expected": "integer", "got": "nothing"}
    answer = call({"jsonrpc": "2.0", "method": "subtract", "id": 2})
    assert answer["error"]["data"]["param"] == "minuend"


def test_unknown_named_param() -> None:
    answer = call({"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 1, "x": 2}, "id": 1})
    assert err(answer) == (INVALID_PARAMS, 1)
    assert answer["error"]["data"] == {"param": "x", "allowed": ["minuend", "subtrahend"]}


def test_params_given_to_a_method_without_params() -> None:
    assert err(call({"jsonrpc": "2.0", "method": "get_data", "params": [1], "id": 1})) == (INVALID_PARAMS, 1)
    assert call({"jsonrpc": "2.0", "method": "get_data", "params": [], "id": 1})["result"] == ["hello", 5]
    assert call({"jsonrpc": "2.0", "method": "get_data", "params": {}, "id": 1})["result"] == ["hello", 5]


@pytest.mark.parametrize(
    "name, value, expected, got",
    [
        ("s", 1, "string", "integer"),
        ("i", "1", "integer", "string"),
        ("i", True, "integer", "boolean"),
        ("i", 1.0, "integer", "number"),
        ("n", False, "number", "boolean"),
        ("n", None, "number", "null"),
        ("b", 0, "boolean", "integer"),
        ("o", [], "object", "array"),
        ("a", {}, "array", "object"),
    ],
)
def test_param_types(name: str, value: object, expected: str, got: str) -> None:
    answer = call({"jsonrpc": "2.0", "method": "types", "params": {name: value}, "id": 1})
    assert err(answer) == (INVALID_PARAMS, 1)
    assert answer["error"]["data"] == {"param": name, "expected": expected, "got": got}
    assert f"param {name!r} must be {expected}, got {got}" in answer["error"]["message"]


def test_param_types_accepted() -> None:
    params = {"s": "x", "i": 3, "n": 2.5, "b": False, "o": {"k": 1}, "a": [1]}
    assert call({"jsonrpc": "2.0", "method": "types", "params": params, "id": 1})["result"] is None
    assert call({"jsonrpc": "2.0", "method": "types", "params": {"n": 2}, "id": 1})["result"] is None


def test_invalid_params_in_a_notification_answer_nothing() -> None:
    assert call({"jsonrpc": "2.0", "method": "subtract", "params": ["a"]}) is None


# --- handlers -------------------------------------------------------------------------------------------


def test_internal_error_is_logged_not_leaked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="chrnode.rpc"):
        answer = call({"jsonrpc": "2.0", "method": "boom", "id": 1})
    assert err(answer) == (INTERNAL_ERROR, 1)
    assert "secret" not in json.dumps(answer) and "Traceback" not in json.dumps(answer)
    assert "boom" in answer["error"]["message"]
    assert any("secret internal detail" in (r.exc_text or "") for r in caplog.records)


def test_handler_rpc_error_passes_through() -> None:
    answer = call({"jsonrpc": "2.0", "method": "custom_error", "id": 1})
    assert answer["error"] == {"code": -32050, "message": "fleet says no", "data": {"fleet": "0x00"}}


def test_result_that_is_not_json_is_internal_error() -> None:
    assert err(call({"jsonrpc": "2.0", "method": "not_json", "id": 1})) == (INTERNAL_ERROR, 1)


def test_raw_json_result_is_spliced() -> None:
    assert call({"jsonrpc": "2.0", "method": "raw", "id": 1}) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"cached": True},
    }


def test_async_handler() -> None:
    assert call({"jsonrpc": "2.0", "method": "echo", "params": ["hi"], "id": 1})["result"] == "hi"
    assert err(call({"jsonrpc": "2.0", "method": "async_error", "id": 2})) == (-32003, 2)


def test_async_handler_timeout() -> None:
    d = make(handler_timeout=0.05)
    answer = call({"jsonrpc": "2.0", "method": "echo", "params": ["hi", 5.0], "id": 1}, d=d)
    assert err(answer) == (TIMED_OUT, 1)
    assert "did not answer within 0.05 s" in answer["error"]["message"]


def test_async_in_batch_keeps_order() -> None:
    answer = call(
        [
            {"jsonrpc": "2.0", "method": "echo", "params": ["a", 0.02], "id": 1},
            {"jsonrpc": "2.0", "method": "get_data", "id": 2},
            {"jsonrpc": "2.0", "method": "echo", "params": ["c"], "id": 3},
        ]
    )
    assert [a["id"] for a in answer] == [1, 2, 3]
    assert answer[0]["result"] == "a" and answer[2]["result"] == "c"


# --- admin ----------------------------------------------------------------------------------------------


def test_admin_method_needs_token() -> None:
    answer = call({"jsonrpc": "2.0", "method": "secret", "id": 1})
    assert err(answer) == (UNAUTHORIZED, 1)
    assert answer["error"]["message"] == UNAUTHORIZED_MESSAGE
    assert "/" not in answer["error"]["message"]  # no path for an unauthenticated caller (issue 8)
    assert call({"jsonrpc": "2.0", "method": "secret", "id": 1}, admin=True)["result"] == "admin only"
    assert call({"jsonrpc": "2.0", "method": "secret"}) is None


# --- method table ---------------------------------------------------------------------------------------


def test_method_table_is_checked() -> None:
    with pytest.raises(ValueError, match="duplicate param"):
        Method("m", _noop, (Param("a", "string"), Param("a", "string")))
    with pytest.raises(ValueError, match="unknown type 'str'"):
        Method("m", _noop, (Param("a", "str"),))
    with pytest.raises(ValueError, match="follows an optional one"):
        Method("m", _noop, (Param("a", "string", False), Param("b", "string")))
    with pytest.raises(ValueError, match="defined twice"):
        Dispatcher([Method("m", _noop), Method("m", _noop)])


@pytest.mark.parametrize("value", [2**63, 2**64 - 1, -(2**63) - 1, 10**40])
def test_integer_params_out_of_the_64_bit_range_are_invalid_params(value: int) -> None:
    answer = call({"jsonrpc": "2.0", "method": "subtract", "params": [value, 1], "id": 9})
    assert err(answer) == (INVALID_PARAMS, 9)
    assert "must be an integer from -9223372036854775808 to 9223372036854775807" in answer["error"]["message"]
    edge = call({"jsonrpc": "2.0", "method": "subtract", "params": [2**63 - 1, 0], "id": 10})
    assert edge["result"] == 2**63 - 1
