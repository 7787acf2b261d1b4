"""RemoteRpc (SPEC 7): failover, chain id check, bounded failure, malformed answers, on real sockets."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chrnode.chain import hexcodec as hx
from chrnode.chain.rpc import RemoteRpc
from chrnode.chain.tx import KeySigner, UnlockedAccount
from chrnode.errors import ChainError, ChainUnavailable, ContractError, ContractReverted, WrongChain
from chrnode.testing import anvil as anvil_mod
from chrnode.testing.anvil import DEV_ADDRESSES, DevChain, anvil_session, skip_or_fail_without_anvil

CHAIN_ID = 31337
Handler = Callable[[Any], tuple[int, bytes]]


class StubServer:
    """A tiny HTTP server on 127.0.0.1:0 answering each POST with handler(parsed JSON or None)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.methods: list[str] = []
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    request = json.loads(body)
                    stub.methods.append(request.get("method"))
                except ValueError:
                    request = None
                status, answer = stub.handler(request)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def reply(request: Any, result: Any = None, error: Any = None) -> tuple[int, bytes]:
    answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
    if error is not None:
        answer["error"] = error
    else:
        answer["result"] = result
    return 200, json.dumps(answer).encode()


def chain_then(result_for: Callable[[Any], Any], chain_id: int = CHAIN_ID) -> Handler:
    """A handler that answers eth_chainId properly and everything else with result_for(request)."""

    def handle(request: Any) -> tuple[int, bytes]:
        if request["method"] == "eth_chainId":
            return reply(request, hex(chain_id))
        return reply(request, result_for(request))

    return handle


@pytest.fixture
def stub() -> Iterator[Callable[[Handler], StubServer]]:
    servers: list[StubServer] = []

    def make(handler: Handler) -> StubServer:
        servers.append(StubServer(handler))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    skip_or_fail_without_anvil()
    with anvil_session(deploy=False) as devchain:
        yield devchain


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- on anvil -----------------------------------------------------------------------------------


@pytest.mark.chain
def test_failover_past_a_dead_endpoint(chain: DevChain) -> None:
    with RemoteRpc([closed_port_url(), chain.rpc_url], CHAIN_ID, timeout=5.0) as rpc:
        assert rpc.chain_id() == CHAIN_ID
        assert rpc.block_number() >= 0
        assert rpc.get_balance(DEV_ADDRESSES[0]) > 0


@pytest.mark.chain
def test_failing_endpoint_backs_off_then_is_retried(
    chain: DevChain, stub: Callable[[Handler], StubServer]
) -> None:
    down = stub(lambda request: (503, b"busy"))
    clock = FakeClock()
    with RemoteRpc([down.url, chain.rpc_url], CHAIN_ID, timeout=5.0, clock=clock, backoff_initial=0.5) as rpc:
        rpc.block_number()
        assert len(down.methods) == 1
        rpc.block_number()  # in backoff: not asked
        assert len(down.methods) == 1 and rpc.retry_in(down.url) == pytest.approx(0.5)
        clock.now += 0.6
        rpc.block_number()  # backoff over, but the other endpoint answers: still not asked first
        assert len(down.methods) == 1 and rpc.retry_in(down.url) == 0.0
        rpc.mark_answering(down.url)  # the monitor saw it answer: back in its configured place
        rpc.block_number()  # asked again, fails again: a fresh backoff, since it had answered
        assert len(down.methods) == 2 and rpc.retry_in(down.url) == pytest.approx(0.5)
        clock.now += 0.6
        rpc.block_number()
        assert len(down.methods) == 2


def test_every_endpoint_in_backoff_fails_at_once_and_says_when_it_retries(
    stub: Callable[[Handler], StubServer],
) -> None:
    down = stub(lambda request: (503, b"busy"))
    clock = FakeClock()
    with RemoteRpc([down.url], CHAIN_ID, timeout=5.0, clock=clock, backoff_initial=2.0) as rpc:
        with pytest.raises(ChainUnavailable, match="HTTP 503"):
            rpc.block_number()
        clock.now += 0.5
        with pytest.raises(ChainUnavailable, match=r"failed 1 time\(s\) in a row .*not tried for 1\.5 s"):
            rpc.block_number()  # nothing sent: the error and the log say what really happens
        assert len(down.methods) == 1
        clock.now += 1.6
        with pytest.raises(ChainUnavailable, match="HTTP 503"):
            rpc.block_number()  # backoff over: asked again
        assert len(down.methods) == 2 and rpc.retry_in(down.url) == pytest.approx(4.0)


def test_an_endpoint_down_for_long_is_logged_at_the_pace_of_its_backoff(
    stub: Callable[[Handler], StubServer], caplog: pytest.LogCaptureFixture
) -> None:
    down = stub(lambda request: (503, b"busy"))
    clock = FakeClock()
    with caplog.at_level(logging.DEBUG, logger="chrnode.chain"):
        with RemoteRpc([down.url], CHAIN_ID, timeout=5.0, clock=clock, backoff_max=30.0) as rpc:
            for _ in range(300):  # 10 minutes of calls every 2 s, as a poller would make them
                with pytest.raises(ChainUnavailable):
                    rpc.block_number()
                clock.now += 2.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Tried when each backoff ends (0.5, 1, 2, 4, 8, 16, then every 30 s), logged as often, and
    # every line tells the real wait: never "30 s" every 2 s.
    assert len(down.methods) == len(warnings) < 30
    assert all(f"not tried for {30.0:.1f} s" in w for w in warnings[-5:])


@pytest.mark.chain
def test_endpoint_the_monitor_saw_fail_is_not_asked_first(
    chain: DevChain, stub: Callable[[Handler], StubServer]
) -> None:
    down = stub(lambda request: (503, b"busy"))
    with RemoteRpc([down.url, chain.rpc_url], CHAIN_ID, timeout=5.0) as rpc:
        rpc.mark_failing(down.url, "no answer within 2 s")
        assert rpc.block_number() >= 0 and down.methods == []
        with pytest.raises(ValueError, match="unknown endpoint"):
            rpc.retry_in("http://127.0.0.1:1/")


@pytest.mark.chain
def test_wrong_chain_is_refused_with_both_ids_and_url(chain: DevChain) -> None:
    with RemoteRpc([chain.rpc_url], 5, timeout=5.0) as rpc:
        with pytest.raises(WrongChain) as info:
            rpc.block_number()
        message = str(info.value)
        assert "31337" in message and "expected 5" in message and chain.rpc_url in message
        with pytest.raises(WrongChain):  # stays disabled
            rpc.block_number()


@pytest.mark.chain
def test_endpoint_on_another_chain_is_skipped(chain: DevChain, stub: Callable[[Handler], StubServer]) -> None:
    other = stub(chain_then(lambda request: "0x1", chain_id=1))
    with RemoteRpc([other.url, chain.rpc_url], CHAIN_ID, timeout=5.0) as rpc:
        rpc.block_number()
        rpc.block_number()
    assert other.methods == ["eth_chainId"]  # checked once, never used


def test_wrong_chain_and_down_endpoints_together_are_unavailability(
    stub: Callable[[Handler], StubServer],
) -> None:
    other = stub(chain_then(lambda request: "0x1", chain_id=1))
    dead = closed_port_url()
    with RemoteRpc([other.url, dead], CHAIN_ID, timeout=2.0) as rpc, pytest.raises(ChainUnavailable) as info:
        rpc.block_number()
    assert "serves chain id 1, expected 31337" in str(info.value) and dead in str(info.value)


@pytest.mark.chain
def test_unknown_method_is_a_chain_error_not_a_revert(chain: DevChain) -> None:
    with pytest.raises(ChainError, match="no_such_method failed: JSON-RPC error") as info:
        chain.rpc.call("no_such_method")
    assert not isinstance(info.value, ContractError)


@pytest.mark.chain
def test_transactions_receipts_and_code(chain: DevChain) -> None:
    key = bytes.fromhex("11" * 32)
    signer = KeySigner(key)
    chain.fund(signer.address, 10**18)
    recipient = b"\x42" * 20
    before = chain.rpc.get_balance(recipient)
    tx_hash = signer.send(chain.rpc, recipient, b"", value=12345)
    receipt = chain.rpc.wait_for_receipt(tx_hash, timeout=10.0)
    assert hx.parse_quantity(receipt["status"], "status") == 1
    assert chain.rpc.get_balance(recipient) == before + 12345
    tx = chain.rpc.get_transaction(tx_hash)
    assert tx is not None and hx.parse_address(tx["from"], "from") == signer.address
    assert chain.rpc.get_code(recipient) == b""
    unlocked = UnlockedAccount(DEV_ADDRESSES[2]).send(chain.rpc, recipient, b"", value=1)
    assert chain.rpc.wait_for_receipt(unlocked)["transactionHash"] == hx.hex_data(unlocked)


@pytest.mark.chain
def test_unknown_transaction_is_not_waited_for_forever(chain: DevChain) -> None:
    assert chain.rpc.get_transaction_receipt(b"\x01" * 32) is None
    started = time.monotonic()
    with pytest.raises(ChainUnavailable, match=r"not mined within 0\.3 s"):
        chain.rpc.wait_for_receipt(b"\x01" * 32, timeout=0.3)
    assert time.monotonic() - started < 5


@pytest.mark.chain
def test_snapshot_and_revert(chain: DevChain) -> None:
    snap = chain.snapshot()
    chain.fund(b"\x07" * 20, 777)
    assert chain.rpc.get_balance(b"\x07" * 20) == 777
    chain.revert(snap)
    assert chain.rpc.get_balance(b"\x07" * 20) == 0


# -- endpoints down -----------------------------------------------------------------------------


def test_all_endpoints_refusing_fails_fast() -> None:
    urls = [closed_port_url() for _ in range(3)]
    started = time.monotonic()
    with RemoteRpc(urls, CHAIN_ID, timeout=2.0) as rpc, pytest.raises(ChainUnavailable) as info:
        rpc.block_number()
    assert time.monotonic() - started < 2.0
    assert all(url in str(info.value) for url in urls)
    assert "all 3 chain endpoint(s) unavailable" in str(info.value)


def test_silent_endpoint_times_out_within_the_bound() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with RemoteRpc([url, closed_port_url()], CHAIN_ID, timeout=0.5) as rpc:
            with pytest.raises(ChainUnavailable, match=r"no answer within 0\.5 s"):
                rpc.block_number()
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 0.5 * 2 + 2.0


@pytest.mark.chain
def test_hung_first_endpoint_costs_one_timeout_not_one_per_backoff(chain: DevChain) -> None:
    with socket.socket() as hung:  # accepts TCP, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        with RemoteRpc([url, chain.rpc_url], CHAIN_ID, timeout=0.5, backoff_initial=0.05) as rpc:
            started = time.monotonic()
            rpc.block_number()
            first = time.monotonic() - started
            time.sleep(0.2)  # its backoff is over; it still never answered
            costs = []
            for _ in range(5):
                started = time.monotonic()
                rpc.block_number()
                costs.append(time.monotonic() - started)
    assert 0.5 <= first < 2.5
    assert max(costs) < 0.4, costs


def test_http_errors_everywhere_are_unavailability(stub: Callable[[Handler], StubServer]) -> None:
    servers = [stub(lambda request: (500, b"oops")), stub(lambda request: (404, b"<html>"))]
    with RemoteRpc([s.url for s in servers], CHAIN_ID, timeout=2.0) as rpc:
        with pytest.raises(ChainUnavailable, match="HTTP 500") as info:
            rpc.block_number()
    assert "HTTP 404" in str(info.value)


# -- malformed answers --------------------------------------------------------------------------

MALFORMED: list[tuple[str, Handler, str]] = [
    ("not json", lambda request: (200, b"<html>hello</html>"), "is not JSON"),
    ("a list", lambda request: (200, b"[]"), "not a JSON-RPC response"),
    ("wrong id", lambda request: (200, b'{"jsonrpc": "2.0", "id": 999999, "result": "0x1"}'), "with id"),
    ("no result", lambda request: (200, json.dumps({"id": request["id"]}).encode()), "neither 'result'"),
    ("bad error", lambda request: reply(request, error="boom"), "malformed 'error'"),
    ("chain id type", lambda request: reply(request, 31337), "expected a 0x-prefixed hex quantity"),
]


@pytest.mark.parametrize(("what", "handler", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_answers_are_chain_errors(
    stub: Callable[[Handler], StubServer], what: str, handler: Handler, message: str
) -> None:
    server = stub(handler)
    with RemoteRpc([server.url], CHAIN_ID, timeout=2.0) as rpc:
        with pytest.raises(ChainError, match=message) as info:
            rpc.block_number()
    assert not isinstance(info.value, ChainUnavailable | WrongChain)
    assert server.url in str(info.value)


WRONG_TYPES: list[tuple[str, Any, Callable[[RemoteRpc], object], str]] = [
    ("eth_blockNumber", 12, lambda rpc: rpc.block_number(), "expected a 0x-prefixed hex quantity"),
    ("eth_blockNumber", None, lambda rpc: rpc.block_number(), "expected a 0x-prefixed hex quantity"),
    ("eth_getBalance", ["0x1"], lambda rpc: rpc.get_balance(b"\x01" * 20), "expected a 0x-prefixed"),
    ("eth_call", "0xabc", lambda rpc: rpc.eth_call(b"\x01" * 20, b""), "hex data of whole bytes"),
    ("eth_getCode", 0, lambda rpc: rpc.get_code(b"\x01" * 20), "hex data"),
    (
        "eth_getTransactionReceipt",
        "mined",
        lambda rpc: rpc.get_transaction_receipt(b"\x01" * 32),
        "object or null",
    ),
    (
        "eth_getTransactionReceipt",
        {"status": "ok"},
        lambda rpc: rpc.get_transaction_receipt(b"\x01" * 32),
        "status",
    ),
    ("eth_getBlockByNumber", [], lambda rpc: rpc.get_block(), "expected a block object"),
    (
        "eth_sendRawTransaction",
        "0x1234",
        lambda rpc: rpc.send_raw_transaction(b"\x00"),
        "32-byte transaction hash",
    ),
]


@pytest.mark.parametrize(("method", "result", "use", "message"), WRONG_TYPES, ids=[w[0] for w in WRONG_TYPES])
def test_results_of_the_wrong_type_are_chain_errors(
    stub: Callable[[Handler], StubServer],
    method: str,
    result: Any,
    use: Callable[[RemoteRpc], object],
    message: str,
) -> None:
    server = stub(chain_then(lambda request: result))
    with RemoteRpc([server.url], CHAIN_ID, timeout=2.0) as rpc, pytest.raises(ChainError, match=message):
        use(rpc)
    assert method in server.methods


def test_revert_reason_is_decoded(stub: Callable[[Handler], StubServer]) -> None:
    data = "0x08c379a0" + abi_encode(["string"], ["name is taken"]).hex()

    def handle(request: Any) -> tuple[int, bytes]:
        if request["method"] == "eth_chainId":
            return reply(request, hex(CHAIN_ID))
        return reply(request, error={"code": 3, "message": "execution reverted", "data": data})

    server = stub(handle)
    with RemoteRpc([server.url], CHAIN_ID, timeout=2.0) as rpc, pytest.raises(ContractReverted) as info:
        rpc.eth_call(b"\x01" * 20, b"\x00\x00\x00\x00")
    assert info.value.reason == "name is taken"
    assert "eth_call reverted: name is taken" in str(info.value)
    assert info.value.data == bytes.fromhex(data[2:])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def shared_stub() -> Iterator[StubServer]:
    server = StubServer(lambda request: (500, b""))
    yield server
    server.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(result=JSON_VALUES)
def test_any_json_result_is_a_number_or_a_chain_error(shared_stub: StubServer, result: Any) -> None:
    shared_stub.handler = chain_then(lambda request: result)
    with RemoteRpc([shared_stub.url], CHAIN_ID, timeout=2.0) as rpc:
        try:
            number = rpc.block_number()
        except ChainError as exc:
            assert "expected" in str(exc)
        else:
            assert isinstance(result, str) and int(result, 16) == number


# -- the anvil helper ---------------------------------------------------------------------------


@pytest.mark.chain
def test_anvil_stop_leaves_no_process() -> None:
    skip_or_fail_without_anvil()
    anvil = anvil_mod.AnvilProcess()
    anvil.start()
    assert anvil.process is not None
    pid = anvil.process.pid
    with anvil.rpc() as rpc:
        assert rpc.chain_id() == CHAIN_ID
    anvil.stop()
    assert not Path(f"/proc/{pid}").exists()
    assert anvil.process is None
    anvil.stop()  # idempotent


def test_missing_anvil_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(anvil_mod, "ANVIL_BIN", tmp_path / "no-anvil")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="npm ci"):
        anvil_mod.skip_or_fail_without_anvil()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="npm ci"):
        anvil_mod.skip_or_fail_without_anvil()
