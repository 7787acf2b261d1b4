"""Generated bodies against the real server: never a 5xx, always a JSON-RPC 2.0 answer (or 204)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chrnode.rpc.api import NodeView
from chrnode.testing.rpc import TOKEN, ServedApp, rpc_factory, sample_snapshot

MAX_BODY = 8192


@pytest.fixture(scope="module")
def conn() -> Iterator[http.client.HTTPConnection]:
    with ServedApp(rpc_factory(NodeView(sample_snapshot()), max_body=MAX_BODY, max_batch=8)) as server:
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        yield c
        c.close()


def exchange(
    conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    # One keep-alive connection for every example: a server that dropped it would fail here.
    conn.request("POST", "/rpc", body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def check_answer(answer: Any) -> None:
    assert isinstance(answer, dict), answer
    assert answer.get("jsonrpc") == "2.0", answer
    assert "id" in answer and (answer["id"] is None or type(answer["id"]) in (str, int, float)), answer
    assert ("result" in answer) != ("error" in answer), answer
    assert set(answer) <= {"jsonrpc", "id", "result", "error"}, answer
    if "error" in answer:
        error = answer["error"]
        assert type(error["code"]) is int and isinstance(error["message"], str) and error["message"]
        assert set(error) <= {"code", "message", "data"}
        assert "Traceback" not in error["message"]


def check(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str] | None = None) -> None:
    status, raw = exchange(conn, body, headers)
    assert status < 500, (status, raw)
    if status == 204:
        assert raw == b""
        return
    assert status in (200, 413), (status, raw)
    answer = json.loads(raw)
    if isinstance(answer, list):
        assert answer, "a batch answer is never an empty array"
        for item in answer:
            check_answer(item)
    else:
        check_answer(answer)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
method_names = st.sampled_from(
    [
        "chr_node_info",
        "network_stats",
        "peer_list",
        "fleet_status",
        "reward_status",
        "health",
        "cron_jobs",
        "rpc.discover",
        "admin_restart_actor",
        "admin_set_log_level",
        "nope",
    ]
) | st.text(max_size=12)
requests = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2]), "method": method_names | json_values},
    optional={
        "params": json_values | st.lists(json_values, max_size=3),
        "id": json_values,
        "extra": json_values,
    },
)
bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | requests.map(lambda r: json.dumps(r).encode())
    | st.lists(requests | json_values, max_size=10).map(lambda r: json.dumps(r).encode())
)

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=bodies)
def test_generated_bodies_get_json_rpc_answers(conn: http.client.HTTPConnection, body: bytes) -> None:
    check(conn, body)


@FUZZ
@given(
    body=requests.map(lambda r: json.dumps(r).encode()),
    auth=st.sampled_from(["", "Bearer " + TOKEN, "Bearer x"]),
)
def test_generated_requests_with_and_without_token(
    conn: http.client.HTTPConnection, body: bytes, auth: str
) -> None:
    check(conn, body, {"Authorization": auth} if auth else None)


@settings(max_examples=30, deadline=None)
@given(extra=st.integers(min_value=1, max_value=3 * MAX_BODY))
def test_oversized_bodies_are_refused_cleanly(conn: http.client.HTTPConnection, extra: int) -> None:
    body = json.dumps({"jsonrpc": "2.0", "method": "health", "id": 1}).encode()
    status, raw = exchange(conn, body + b" " * (MAX_BODY - len(body) + extra))
    assert status == 413
    assert json.loads(raw)["error"]["code"] == -32600
    conn.close()  # the server closes after a 413
