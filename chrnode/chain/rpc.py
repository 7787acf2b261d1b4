"""RemoteRpc: Ethereum JSON-RPC over HTTP with several endpoints and failover (SPEC 7).

One `requests.Session` per endpoint (kept alive). A call tries the endpoints that answer in the
configured order. An endpoint that failed (refused, timed out, HTTP error) backs off
exponentially and, once its backoff is over, is still tried only after the answering ones,
until it answers again (a call that reaches it, or `mark_answering` from RemoteChain.Monitor,
which probes every endpoint): so a hung first endpoint costs one timeout, not one per backoff
period (issue 7). With every endpoint in backoff a call fails at once with ChainUnavailable,
naming each endpoint's last error and when it is tried again: nothing is sent, so the log and
the error say what really happens; the client recovers when a backoff ends, or at once when
`mark_answering` reports an endpoint back (RemoteChain.Monitor probes each one every poll
interval, 2 s, and the chain actors pass on what it sees). Each endpoint gets at most one
attempt per call, each bounded by `timeout`, so a call never takes longer than about
`len(endpoints) * timeout`. Failures are logged when an endpoint starts failing and then at
the pace of its backoff, not once per call.

The first time an endpoint is used its `eth_chainId` is compared with the configured chain id;
an endpoint serving another chain is disabled for the life of the client.

Errors, all under `ChainError`:
- no endpoint answered and at least one was unreachable, timed out or gave an HTTP error
  -> `ChainUnavailable` (naming every endpoint and what went wrong with it);
- every endpoint on another chain -> `WrongChain` (URL and both ids);
- an answer that is not JSON-RPC, or a result of the wrong type -> `ChainError` saying what was
  expected;
- a revert -> `ContractReverted` (a `ContractError`) with the decoded Error(string) reason;
- any other JSON-RPC error object -> `ChainError` with its code and message.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from chrnode.chain import hexcodec as hx
from chrnode.errors import ChainError, ChainUnavailable, ContractReverted, WrongChain

log = logging.getLogger("chrnode.chain")

Address = bytes | str
BlockId = int | str


@dataclass
class _Endpoint:
    url: str
    session: requests.Session
    chain_checked: bool = False
    wrong_chain: WrongChain | None = None
    failures: int = 0  # in a row; 0 means it answers
    retry_at: float = 0.0
    log_at: float = 0.0  # when a further failure may be logged at warning level
    last_error: str = ""


class _TransportError(Exception):
    """An endpoint could not be reached or answered with an HTTP error: try the next one."""


class _MalformedAnswerError(ChainError):
    """An endpoint answered something that is not a JSON-RPC response."""


class RemoteRpc:
    """A JSON-RPC client over several endpoints of one chain, with failover."""

    def __init__(
        self,
        endpoints: Sequence[str],
        chain_id: int,
        timeout: float = 5.0,
        session_factory: Callable[[], requests.Session] = requests.Session,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        failure_log_level: int = logging.WARNING,
    ) -> None:
        if not endpoints:
            raise ValueError("RemoteRpc needs at least one endpoint URL")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.expected_chain_id = chain_id
        self.timeout = timeout
        self._endpoints = [_Endpoint(url, session_factory()) for url in endpoints]
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._clock = clock
        # The node's chain actors log at INFO: RemoteChain.Monitor already warns about each endpoint.
        self._failure_log_level = failure_log_level
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def endpoints(self) -> list[str]:
        return [ep.url for ep in self._endpoints]

    def close(self) -> None:
        for ep in self._endpoints:
            ep.session.close()

    def __enter__(self) -> RemoteRpc:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the generic call ---------------------------------------------------------------------

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Send one JSON-RPC request, failing over across endpoints; return its `result`."""
        failures: list[tuple[str, Exception]] = []
        for ep in self._attempt_order():
            if ep.wrong_chain is not None:
                failures.append((ep.url, ep.wrong_chain))
                continue
            wait = self.retry_in(ep.url)
            if wait > 0:
                error = f"failed {ep.failures} time(s) in a row ({ep.last_error}); not tried for {wait:.1f} s"
                failures.append((ep.url, _TransportError(error)))
                continue
            try:
                if not ep.chain_checked:
                    self._check_chain(ep)
                result = self._post(ep, method, list(params))
            except (_TransportError, _MalformedAnswerError) as exc:
                self._mark_failed(ep, exc)
                failures.append((ep.url, exc))
                continue
            except WrongChain as exc:
                failures.append((ep.url, exc))
                continue
            except ChainError:  # the endpoint answered, with an error object (a revert, ...)
                self._mark_ok(ep)
                raise
            self._mark_ok(ep)
            return result
        raise self._final_error(method, failures)

    def _attempt_order(self) -> list[_Endpoint]:
        now = self._clock()
        with self._lock:
            usable = [ep for ep in self._endpoints if ep.wrong_chain is None]
            answering = [ep for ep in usable if ep.failures == 0]
            # Failed ones whose backoff is over: after every answering one, longest-waiting first.
            recovering = sorted(
                (ep for ep in usable if ep.failures and ep.retry_at <= now), key=lambda ep: ep.retry_at
            )
            waiting = [ep for ep in usable if ep.failures and ep.retry_at > now]
            # Endpoints in backoff and disabled ones are listed last only so that the final error
            # can name them; they are not sent anything.
            return (
                answering
                + recovering
                + waiting
                + [ep for ep in self._endpoints if ep.wrong_chain is not None]
            )

    def _mark_failed(self, ep: _Endpoint, exc: Exception, *, quiet: bool = False) -> None:
        now = self._clock()
        with self._lock:
            ep.failures += 1
            delay = min(self._backoff_max, self._backoff_initial * 2 ** (ep.failures - 1))
            ep.retry_at = now + delay
            ep.last_error = str(exc)
            loud = not quiet and now >= ep.log_at
            if loud:
                ep.log_at = now + delay
        if loud:
            others = ", after the endpoints that answer" if len(self._endpoints) > 1 else ""
            log.log(
                self._failure_log_level,
                "chain endpoint %s failed %d time(s) in a row (%s); not tried for %.1f s%s",
                ep.url, ep.failures, exc, delay, others,
            )  # fmt: skip
        else:
            log.debug("chain endpoint %s failed again (%d in a row): %s", ep.url, ep.failures, exc)

    def _mark_ok(self, ep: _Endpoint) -> None:
        if ep.failures:
            log.info("chain endpoint %s is answering again after %d failure(s)", ep.url, ep.failures)
        with self._lock:
            ep.failures = 0
            ep.retry_at = 0.0
            ep.log_at = 0.0
            ep.last_error = ""

    # -- what RemoteChain.Monitor learns by probing every endpoint --------------------------------

    def mark_answering(self, url: str) -> None:
        """The endpoint answered someone else's probe: try it in its configured place again."""
        ep = self._by_url(url)
        if ep is not None and ep.failures:
            self._mark_ok(ep)

    def mark_failing(self, url: str, error: str) -> None:
        """The endpoint failed someone else's probe: back off before a call pays its timeout."""
        ep = self._by_url(url)
        if ep is not None and ep.failures == 0:
            self._mark_failed(ep, _TransportError(error), quiet=True)

    def retry_in(self, url: str) -> float:
        """Seconds until the endpoint's backoff is over (0.0 when it may be tried now)."""
        ep = self._by_url(url)
        if ep is None:
            raise ValueError(f"unknown endpoint {url!r}; this client uses {', '.join(self.endpoints)}")
        with self._lock:
            return max(0.0, ep.retry_at - self._clock()) if ep.failures else 0.0

    def _by_url(self, url: str) -> _Endpoint | None:
        return next((ep for ep in self._endpoints if ep.url == url), None)

    def _check_chain(self, ep: _Endpoint) -> None:
        try:
            served = hx.parse_quantity(self._post(ep, "eth_chainId", []), "eth_chainId")
        except _MalformedAnswerError:
            raise
        except ChainError as exc:  # an error object or a non-quantity: not an Ethereum endpoint we can use
            raise _MalformedAnswerError(f"cannot check its chain id: {exc}") from exc
        if served != self.expected_chain_id:
            ep.wrong_chain = WrongChain(
                f"chain endpoint {ep.url} serves chain id {served}, expected {self.expected_chain_id}; "
                "fix the endpoint list or the configured chain id"
            )
            log.error("%s (endpoint disabled)", ep.wrong_chain)
            raise ep.wrong_chain
        ep.chain_checked = True

    @staticmethod
    def _final_error(method: str, failures: list[tuple[str, Exception]]) -> ChainError:
        # The most specific class that covers every failure: all on another chain -> WrongChain;
        # all answering garbage (or on another chain) -> ChainError; any unreachable -> ChainUnavailable.
        details = "; ".join(f"{url}: {exc}" for url, exc in failures)
        if all(isinstance(exc, WrongChain) for _, exc in failures):
            return WrongChain(f"{method}: no endpoint serves the configured chain ({details})")
        if not any(isinstance(exc, _TransportError) for _, exc in failures):
            return ChainError(f"{method}: no endpoint gave a valid JSON-RPC answer ({details})")
        return ChainUnavailable(f"{method}: all {len(failures)} chain endpoint(s) unavailable ({details})")

    def _post(self, ep: _Endpoint, method: str, params: list[Any]) -> Any:
        request_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        try:
            response = ep.session.post(ep.url, json=body, timeout=self.timeout)
        except requests.Timeout as exc:
            raise _TransportError(f"no answer within {self.timeout} s") from exc
        except requests.RequestException as exc:
            raise _TransportError(f"cannot reach it: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise _TransportError(f"HTTP {response.status_code} {response.reason}")
        try:
            answer = response.json()
        except (ValueError, json.JSONDecodeError) as exc:
            raise _MalformedAnswerError(f"answer to {method} is not JSON: {response.text[:80]!r}") from exc
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            raise _MalformedAnswerError(
                f"answer to {method} is not a JSON-RPC response with id {request_id}: {str(answer)[:80]!r}"
            )
        if "error" in answer:
            raise _rpc_error(method, answer["error"])
        if "result" not in answer:
            raise _MalformedAnswerError(f"answer to {method} has neither 'result' nor 'error'")
        return answer["result"]

    # -- typed helpers ------------------------------------------------------------------------

    def chain_id(self) -> int:
        return hx.parse_quantity(self.call("eth_chainId"), "eth_chainId")

    def block_number(self) -> int:
        return hx.parse_quantity(self.call("eth_blockNumber"), "eth_blockNumber")

    def get_block(self, block: BlockId = "latest") -> dict[str, Any]:
        """The block header (no transaction bodies); `number` and `timestamp` are checked."""
        result = self.call("eth_getBlockByNumber", [_block_id(block), False])
        if not isinstance(result, dict):
            raise ChainError(f"eth_getBlockByNumber({block!r}): got {result!r}; expected a block object")
        hx.parse_quantity(result.get("number"), "block number")
        hx.parse_quantity(result.get("timestamp"), "block timestamp")
        return result

    def eth_call(
        self, to: Address, data: bytes, block: BlockId = "latest", sender: Address | None = None
    ) -> bytes:
        tx: dict[str, str] = {"to": hx.hex_address(to), "data": hx.hex_data(data)}
        if sender is not None:
            tx["from"] = hx.hex_address(sender)
        return hx.parse_data(self.call("eth_call", [tx, _block_id(block)]), "eth_call result")

    def get_balance(self, address: Address, block: BlockId = "latest") -> int:
        result = self.call("eth_getBalance", [hx.hex_address(address), _block_id(block)])
        return hx.parse_quantity(result, "eth_getBalance")

    def get_code(self, address: Address, block: BlockId = "latest") -> bytes:
        result = self.call("eth_getCode", [hx.hex_address(address), _block_id(block)])
        return hx.parse_data(result, "eth_getCode")

    def get_transaction_count(self, address: Address, block: BlockId = "pending") -> int:
        result = self.call("eth_getTransactionCount", [hx.hex_address(address), _block_id(block)])
        return hx.parse_quantity(result, "eth_getTransactionCount")

    def gas_price(self) -> int:
        return hx.parse_quantity(self.call("eth_gasPrice"), "eth_gasPrice")

    def estimate_gas(self, tx: dict[str, Any]) -> int:
        return hx.parse_quantity(self.call("eth_estimateGas", [tx]), "eth_estimateGas")

    def get_transaction(self, tx_hash: bytes) -> dict[str, Any] | None:
        return _object_or_none(self.call("eth_getTransactionByHash", [_tx_hash(tx_hash)]), "transaction")

    def get_transaction_receipt(self, tx_hash: bytes) -> dict[str, Any] | None:
        result = self.call("eth_getTransactionReceipt", [_tx_hash(tx_hash)])
        receipt = _object_or_none(result, "transaction receipt")
        if receipt is not None:
            hx.parse_quantity(receipt.get("status"), "receipt status")
            if not isinstance(receipt.get("logs"), list):
                logs = receipt.get("logs")
                raise ChainError(f"receipt of 0x{tx_hash.hex()}: 'logs' is {logs!r}; expected a list")
        return receipt

    def send_raw_transaction(self, raw: bytes) -> bytes:
        return _parse_hash(self.call("eth_sendRawTransaction", [hx.hex_data(raw)]), "eth_sendRawTransaction")

    def send_transaction(self, tx: dict[str, Any]) -> bytes:
        """eth_sendTransaction from an account the endpoint holds unlocked (anvil's dev accounts)."""
        return _parse_hash(self.call("eth_sendTransaction", [tx]), "eth_sendTransaction")

    def wait_for_receipt(self, tx_hash: bytes, timeout: float = 30.0, poll: float = 0.05) -> dict[str, Any]:
        """The receipt once mined (bounded wait); a reverted transaction raises ContractReverted."""
        deadline = self._clock() + timeout
        while True:
            receipt = self.get_transaction_receipt(tx_hash)
            if receipt is not None:
                break
            if self._clock() >= deadline:
                raise ChainUnavailable(f"transaction 0x{tx_hash.hex()} not mined within {timeout} s")
            time.sleep(poll)
        if hx.parse_quantity(receipt["status"], "receipt status") != 1:
            raise ContractReverted(f"transaction 0x{tx_hash.hex()} reverted (status 0)")
        return receipt


def _rpc_error(method: str, error: object) -> ChainError:
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return _MalformedAnswerError(f"answer to {method} has a malformed 'error': {str(error)[:80]!r}")
    message: str = error["message"]
    data = error.get("data")
    if isinstance(data, dict):  # some clients nest it: {"data": {"data": "0x..."}}
        data = data.get("data")
    revert_data = b""
    if isinstance(data, str):
        try:
            revert_data = hx.parse_data(data, "revert data")
        except ChainError:
            revert_data = b""
    if error.get("code") == 3 or "revert" in message.lower():
        reason = hx.decode_revert(revert_data)
        shown = reason if reason is not None else message
        return ContractReverted(f"{method} reverted: {shown}", data=revert_data, reason=reason)
    return ChainError(f"{method} failed: JSON-RPC error {error.get('code')}: {message}")


def _block_id(block: BlockId) -> str:
    if isinstance(block, int):
        return hx.hex_quantity(block)
    if block in ("latest", "earliest", "pending", "safe", "finalized"):
        return block
    raise ValueError(f"block must be a number or a tag like 'latest', got {block!r}")


def _tx_hash(tx_hash: bytes) -> str:
    if len(tx_hash) != 32:
        raise ValueError(f"a transaction hash is 32 bytes, got {len(tx_hash)}")
    return hx.hex_data(tx_hash)


def _parse_hash(value: object, what: str) -> bytes:
    raw = hx.parse_data(value, what)
    if len(raw) != 32:
        raise ChainError(f"{what}: got {value!r}; expected a 32-byte transaction hash")
    return raw


def _object_or_none(value: object, what: str) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise ChainError(f"{what}: got {str(value)[:80]!r}; expected an object or null")
