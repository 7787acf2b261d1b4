"""Messages of the RemoteChain actors (SPEC 7): picklable requests, one answer type.

Every request carries a `tag` the caller chooses (LoopAsks replaces it with its own); the answer
is a `ChainAnswer` with the same tag. Who answers what:

    RemoteChain.Cache   BnsResolve, FleetCheckRequest, PaymentCheckRequest, FleetStatusRequest,
                        EthRequest (through the cache tiers: the node's proxied eth_* methods)
    RemoteChain.RPC     EthRequest (straight to the chain, uncached: raw calls), SubmitTickets,
                        RunJob("ticket_submit") from Cron
    RemoteChain.Monitor ChainStatusRequest (also published as snapshot "chain"); it sends
                        CacheInvalidate to RemoteChain.Cache when Fleet/BNS events change a read

`ChainAnswer.code` is "" when ok, else a snake_case code: the ticket codes of chrnode.edge.codes
and chrnode.chain.payments for payment checks, and bad_name, not_configured, chain_unavailable,
wrong_chain, contract_error, chain_error, invalid_params, method_not_found, busy, internal_error.
`answer_error(answer)` turns a failed answer back into the matching exception of chrnode.errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chrnode.errors import (
    ChainError,
    ChainNotConfigured,
    ChainUnavailable,
    ChrError,
    ContractError,
    NameError_,
    RpcError,
    TicketError,
    WrongChain,
)

BAD_NAME = "bad_name"
NOT_CONFIGURED = "not_configured"
CHAIN_UNAVAILABLE = "chain_unavailable"
WRONG_CHAIN = "wrong_chain"
CONTRACT_ERROR = "contract_error"
CHAIN_ERROR = "chain_error"
INVALID_PARAMS = "invalid_params"
METHOD_NOT_FOUND = "method_not_found"
BUSY = "busy"
INTERNAL_ERROR = "internal_error"
_RPC_CODES = {-32602: INVALID_PARAMS, -32601: METHOD_NOT_FOUND}


@dataclass(frozen=True)
class BnsResolve:
    """Answer: result = chrnode.chain.service.BnsResolution (its `found` says if it resolves)."""

    name: str
    tag: Any = None


@dataclass(frozen=True)
class FleetCheckRequest:
    """SPEC 5 step 4. Answer: result = (fleet allows node, fleet allows device)."""

    fleet: bytes
    node: bytes
    device: bytes
    tag: Any = None


@dataclass(frozen=True)
class PaymentCheckRequest:
    """SPEC 5 step 6 for `ticket` (a chrnode.ticket.Ticket). Answer: ok, or the payment_* code."""

    ticket: Any
    device: bytes
    tag: Any = None


@dataclass(frozen=True)
class FleetStatusRequest:
    """The node's standing in a fleet (default: the configured one). Answer: result = dict."""

    node: bytes
    fleet: bytes | None = None
    tag: Any = None


@dataclass(frozen=True)
class EthRequest:
    """A proxied read (eth_blockNumber, eth_chainId, eth_call, eth_getBalance, eth_getCode,
    eth_getTransactionReceipt). Answer: result = the endpoint's JSON result; `stale` if cached."""

    method: str
    params: tuple[Any, ...] | list[Any] = ()
    tag: Any = None


@dataclass(frozen=True)
class SubmitTickets:
    """Submit the unsubmitted tickets of `epoch` (None: the previous epoch by the chain's head)
    and record the outcome. Answer: result = {epoch, sent, accepted, rejected, not_sent}."""

    epoch: int | None = None
    tag: Any = None


@dataclass(frozen=True)
class ChainStatusRequest:
    """Answer: result = the Monitor's snapshot dict."""

    tag: Any = None


@dataclass(frozen=True)
class CacheInvalidate:
    """From RemoteChain.Monitor: the chain changed these cached reads (chrnode.chain.watch keys of
    `category`), or every entry of it when `everything`. No answer."""

    keys: tuple[str, ...] = ()
    everything: bool = False
    reason: str = ""
    category: str = "contracts"


@dataclass(frozen=True)
class ChainAnswer:
    tag: Any
    ok: bool
    result: Any = None
    code: str = ""
    error: str = ""
    stale: bool = False  # served from the cache past its TTL while the chain was unavailable


# --- from a pool thread to its own actor (ThreadBridge.post(own name, ...)) ----------------------


@dataclass(frozen=True)
class PoolAnswer:
    """A request served by the pool: the actor sends `answer` to `reply_to` (who asked)."""

    answer: ChainAnswer
    reply_to: Any


@dataclass(frozen=True)
class L2Write:
    """RemoteChain.Cache: a write of the L2 cache tier, batched to Model.Sql.Worker."""

    op: Any  # chrnode.storage.ops.CachePut | CacheDelete


@dataclass(frozen=True)
class FleetStanding:
    """RemoteChain.Cache: the node's standing in its fleet, published as snapshot "fleet_chain"."""

    status: dict[str, Any]


@dataclass(frozen=True)
class Polled:
    """RemoteChain.Monitor: one poll of every endpoint, the watched events and the balance."""

    results: list[tuple[str, Any]]
    events: Any  # (Invalidation, error) or None
    balance: Any  # (balance, gas price, error) or None


@dataclass(frozen=True)
class Submitted:
    """RemoteChain.RPC: a ticket submission run ended; its part of snapshot "reward"."""

    reward: dict[str, Any]


def error_answer(tag: Any, exc: BaseException) -> ChainAnswer:
    """The failed answer for an exception raised while serving a request."""
    return ChainAnswer(tag, False, None, error_code(exc), str(exc) or type(exc).__name__)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, TicketError):
        return exc.code
    if isinstance(exc, NameError_):
        return BAD_NAME
    if isinstance(exc, RpcError):
        return _RPC_CODES.get(exc.code, INTERNAL_ERROR)
    if isinstance(exc, ChainNotConfigured):
        return NOT_CONFIGURED
    if isinstance(exc, ChainUnavailable):
        return CHAIN_UNAVAILABLE
    if isinstance(exc, WrongChain):
        return WRONG_CHAIN
    if isinstance(exc, ContractError):
        return CONTRACT_ERROR
    if isinstance(exc, ChainError):
        return CHAIN_ERROR
    if isinstance(exc, ValueError):
        return INVALID_PARAMS
    return INTERNAL_ERROR


def answer_error(answer: ChainAnswer) -> ChrError:
    """The exception a failed answer stands for, to raise on the caller's side."""
    code, message = answer.code, answer.error
    simple: dict[str, type[ChrError]] = {
        BAD_NAME: NameError_,
        NOT_CONFIGURED: ChainNotConfigured,
        CHAIN_UNAVAILABLE: ChainUnavailable,
        BUSY: ChainUnavailable,
        WRONG_CHAIN: WrongChain,
        CONTRACT_ERROR: ContractError,
        CHAIN_ERROR: ChainError,
    }
    if code in simple:
        return simple[code](message)
    if code == INVALID_PARAMS:
        return RpcError(-32602, message)
    if code == METHOD_NOT_FOUND:
        return RpcError(-32601, message)
    if code == INTERNAL_ERROR or not code:
        return ChrError(message or "the chain actor failed")
    return TicketError(code, message)
