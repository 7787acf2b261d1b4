"""JSON-RPC methods answered by other actors: BNS, the proxied eth_* reads and tickets (SPEC 7, 8).

They run on the RPC actor's Tornado loop and ask the owning actor through `LoopAsks`; each is one
actor round trip (about a millisecond), unlike the snapshot methods, which need none.
"""

from __future__ import annotations

import logging
from typing import Any

from actors import chain_messages as cm
from actors import messages as m
from actors.base import LoopAsks
from chrnode.crypto import parse_address
from chrnode.errors import ActorRestarting, ChrError, CryptoError, RpcError
from chrnode.rpc.api import jsonable, public_chain_error
from chrnode.rpc.jsonrpc import Method, Param

log = logging.getLogger("chrnode.rpc")

ASK_TIMEOUT = 15.0
CHAIN_FAILED = -32010  # the chain could not answer (down, wrong chain, reverted): see the message


ETH_METHODS: dict[str, tuple[Param, ...]] = {
    "eth_blockNumber": (),
    "eth_chainId": (),
    "eth_call": (
        Param("tx", "object", description="{to, data[, from]}"),
        Param("block", "string", False, "block tag or number, default latest"),
    ),
    "eth_getBalance": (Param("address", "string"), Param("block", "string", False, "default latest")),
    "eth_getCode": (Param("address", "string"), Param("block", "string", False, "default latest")),
    "eth_getTransactionReceipt": (Param("hash", "string", description="0x transaction hash"),),
}


def _address(name: str, text: str) -> bytes:
    try:
        return parse_address(text)
    except CryptoError as exc:
        raise RpcError(-32602, f"{name}: {exc}", {"param": name, "expected": "0x + 40 hex digits"}) from exc


def _raise(answer: cm.ChainAnswer) -> None:
    error = cm.answer_error(answer)
    if isinstance(error, RpcError):
        raise error
    data = {"code": answer.code}
    if answer.code == cm.BAD_NAME:
        raise RpcError(-32602, str(error), data)  # about the caller's own name
    if answer.code == cm.CONTRACT_ERROR:
        raise RpcError(CHAIN_FAILED, str(error), data)  # the revert of the caller's own call
    log.warning("chain request failed (%s): %s", answer.code or "internal_error", error)
    raise RpcError(CHAIN_FAILED, public_chain_error(answer.code or ""), data)


def chain_methods(asks: LoopAsks) -> list[Method]:
    async def chain(message: Any) -> Any:
        try:
            answer = await asks.ask("RemoteChain.Cache", message, ASK_TIMEOUT)
        except ActorRestarting as exc:  # failed at once (issue 9): say so, not "in time"
            log.info("chain service restarting: %s", exc)
            raise RpcError(CHAIN_FAILED, "the chain service is restarting; try again in a moment") from exc
        except ChrError as exc:
            log.warning("chain service did not answer: %s", exc)
            raise RpcError(CHAIN_FAILED, "the chain service did not answer in time; try again later") from exc
        if not answer.ok:
            _raise(answer)
        return answer

    async def bns_resolve(name: str) -> dict[str, Any]:
        answer = await chain(cm.BnsResolve(name))
        found = answer.result
        return {
            "name": found.name,
            "namespace": found.namespace,
            "found": bool(found.found),
            "owner": jsonable(found.owner),
            "devices": jsonable(list(found.devices)),
            "expiry": found.expiry,
            "stale": bool(answer.stale),
        }

    def eth(method: str, declared: tuple[Param, ...]) -> Any:
        async def handler(**given: Any) -> Any:
            # Positional for the chain, in the declared order; optional ones left out stay out.
            values = tuple(given[p.name] for p in declared if given.get(p.name) is not None)
            answer = await chain(cm.EthRequest(method, values))
            return answer.result

        return handler

    async def ticket_best(device: str, fleet: str, epoch: int) -> dict[str, Any] | None:
        reply = await asks.ask(
            "TicketStore",
            m.LoadTicket(_address("device", device), _address("fleet", fleet), epoch),
            ASK_TIMEOUT,
        )
        if not reply.ok:
            log.warning("ticket_best: the ticket store failed: %s", reply.error)
            raise RpcError(-32603, "the ticket store could not answer; the node log has the details")
        if reply.ticket is None:
            return None
        import msgpack

        return {str(k): jsonable(v) for k, v in msgpack.unpackb(reply.ticket, raw=False).items()}

    methods = [
        Method(
            "bns_resolve",
            bns_resolve,
            (Param("name", "string", description="e.g. mysite.chronara.com"),),
            result="{name, namespace, found, owner, devices, expiry, stale}",
            summary="Resolve a BNS name (name.chronara.<tld>, or a bare name) through the cache tiers",
        ),
        Method(
            "ticket_best",
            ticket_best,
            (
                Param("device", "string"),
                Param("fleet", "string"),
                Param("epoch", "integer", True, "ticket epoch (SPEC 5)", 0, 2**63 - 1),
            ),
            result="the stored ticket (SPEC 5 fields) or null",
            summary="The best ticket this node holds for (device, fleet, epoch)",
        ),
    ]
    for name, params in ETH_METHODS.items():
        methods.append(
            Method(
                name,
                eth(name, params),
                params,
                result="the chain's answer",
                summary=f"{name}, proxied to the chain through the node's cache",
            )
        )
    return methods
