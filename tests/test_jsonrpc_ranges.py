"""Integer params have ranges (issue 8): out of range is -32602 at once, before any handler runs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.rpc.jsonrpc import INT64_MAX, INT64_MIN, Dispatcher, Method, Param
from chrnode.rpc.openrpc import method_object
from chrnode.rpc.wire import INVALID_PARAMS

calls: list[Any] = []


def _record(**given: Any) -> str:
    calls.append(given)
    return "ran"


METHODS = [
    Method("epoch", _record, (Param("epoch", "integer", True, "an epoch", 0, 2**63 - 1),)),
    Method("any_int", _record, (Param("n", "integer"),)),
    Method("small", _record, (Param("n", "integer", False, "", -5, 5),)),
]
DISPATCHER = Dispatcher(METHODS)


def call(method: str, params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    out = asyncio.run(DISPATCHER.dispatch_body(body, is_admin=False))
    assert out is not None
    return json.loads(out)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([("epoch", 0, 2**63 - 1), ("any_int", INT64_MIN, INT64_MAX), ("small", -5, 5)]),
    st.one_of(
        st.integers(),
        st.integers(-(2**70), 2**70),
        st.sampled_from([2**63, 2**64 - 1, -(2**63) - 1, -1, 0, 2**63 - 1, 10**400]),
    ),
    st.booleans(),
)
def test_integers_outside_the_range_are_invalid_params(
    spec: tuple[str, int, int], value: int, named: bool
) -> None:
    method, low, high = spec
    name = "epoch" if method == "epoch" else "n"
    calls.clear()
    answer = call(method, {name: value} if named else [value])
    if low <= value <= high:
        assert answer["result"] == "ran" and calls == [{name: value}]
    else:
        error = answer["error"]
        assert error["code"] == INVALID_PARAMS
        assert error["data"]["param"] == name and error["data"]["expected"] == f"integer {low}..{high}"
        assert f"from {low} to {high}" in error["message"] and len(error["message"]) < 200
        assert calls == []  # the handler never saw it


def test_ticket_epoch_two_to_the_63_is_refused_and_the_range_is_documented() -> None:
    answer = call("epoch", [2**63])
    assert answer["error"]["code"] == INVALID_PARAMS
    schema = method_object(METHODS[0])["params"][0]["schema"]
    assert schema == {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
    assert method_object(METHODS[1])["params"][0]["schema"]["maximum"] == INT64_MAX
