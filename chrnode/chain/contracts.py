"""Typed bindings of the project's contracts over RemoteRpc (SPEC 5, SPEC 7).

Addresses are 20-byte `bytes` in and out (a 0x-hex string is accepted as input). Reads are
eth_calls; writes take a `Sender` (chrnode.chain.tx: the node's KeySigner, or an anvil dev
account) and return once the transaction is mined. A revert raises ContractReverted whose
message names the contract's custom error, e.g. `NotOperator(caller=0x.., operator=0x..)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from chrnode.chain import hexcodec as hx
from chrnode.chain.abi import ContractAbi
from chrnode.chain.bns import parse_name
from chrnode.chain.rpc import Address, BlockId, RemoteRpc
from chrnode.chain.tx import Sender
from chrnode.errors import ContractError, ContractReverted

REJECT_REASONS = {
    1: "wrong_chain",
    2: "wrong_node",
    3: "bad_epoch",
    4: "bad_signature",
    5: "fleet_refused",
    6: "not_higher",
}


class _Bound:
    """One deployed contract: its ABI and address on one chain."""

    ARTIFACT = ""

    def __init__(self, rpc: RemoteRpc, address: Address) -> None:
        self.rpc = rpc
        self.address = hx.address_bytes(address)
        self.abi = ContractAbi.from_artifact(self.ARTIFACT)

    def _call(self, function: str, *args: Any, block: BlockId = "latest") -> tuple[Any, ...]:
        data = self.abi.encode_call(function, *args)
        try:
            result = self.rpc.eth_call(self.address, data, block)
        except ContractReverted as exc:
            raise self._explain(exc, function) from exc
        if not result:
            raise ContractError(
                f"{self.ARTIFACT}.{function} at {hx.hex_address(self.address)} returned no data; "
                "is a contract deployed at this address on this chain?"
            )
        return self.abi.decode_result(function, result)

    def _transact(self, sender: Sender, function: str, *args: Any, timeout: float = 30.0) -> dict[str, Any]:
        data = self.abi.encode_call(function, *args)
        try:
            tx_hash = sender.send(self.rpc, self.address, data)
        except ContractReverted as exc:  # estimation runs the call first: this is where reverts show
            raise self._explain(exc, function) from exc
        return self.rpc.wait_for_receipt(tx_hash, timeout=timeout)

    def _explain(self, exc: ContractReverted, function: str) -> ContractReverted:
        custom = self.abi.describe_error(exc.data)
        reason = custom or exc.reason
        if reason is None:
            return ContractReverted(f"{self.ARTIFACT}.{function} reverted: {exc}", exc.data, None)
        return ContractReverted(f"{self.ARTIFACT}.{function} reverted: {reason}", exc.data, reason)


class BnsRecord(NamedTuple):
    """What BnsRegistry.resolve returns; unpacks as (owner, devices, expiry)."""

    owner: bytes  # 20 zero bytes when the name was never registered
    devices: tuple[bytes, ...]
    expiry: int  # unix time; the caller compares it with the chain's time

    @property
    def registered(self) -> bool:
        return self.owner != bytes(20)


class Bns(_Bound):
    ARTIFACT = "BnsRegistry"

    def resolve(self, namespace: str) -> BnsRecord:
        owner, devices, expiry = self._call("resolve", namespace)
        return BnsRecord(owner, tuple(devices), expiry)

    def resolve_name(self, name: str) -> BnsRecord:
        """Resolve a human name (`mysite.chronara.com`); a bad name raises NameError_ first."""
        return self.resolve(parse_name(name))

    def register(
        self, sender: Sender, namespace: str, devices: Sequence[Address], expiry: int
    ) -> dict[str, Any]:
        return self._transact(sender, "register", namespace, [hx.address_bytes(d) for d in devices], expiry)

    def update(
        self, sender: Sender, namespace: str, devices: Sequence[Address], expiry: int
    ) -> dict[str, Any]:
        return self._transact(sender, "update", namespace, [hx.address_bytes(d) for d in devices], expiry)

    def transfer(self, sender: Sender, namespace: str, new_owner: Address) -> dict[str, Any]:
        return self._transact(sender, "transfer", namespace, hx.address_bytes(new_owner))


class Fleet(_Bound):
    ARTIFACT = "Fleet"

    def node_allowed(self, node: Address) -> bool:
        return bool(self._call("nodeAllowed", hx.address_bytes(node))[0])

    def device_allowed(self, device: Address) -> bool:
        """Listed, or the device list is open (what the TicketRegistry asks)."""
        return bool(self._call("deviceAllowed", hx.address_bytes(device))[0])

    def device_listed(self, device: Address) -> bool:
        return bool(self._call("deviceListed", hx.address_bytes(device))[0])

    def devices_open(self) -> bool:
        return bool(self._call("devicesOpen")[0])

    def set_devices_open(self, sender: Sender, open_: bool) -> dict[str, Any]:
        return self._transact(sender, "setDevicesOpen", open_)

    def price_per_byte(self) -> int:
        return int(self._call("pricePerByte")[0])

    def requires_payment(self) -> bool:
        return bool(self._call("requiresPayment")[0])

    def token(self) -> bytes:
        return bytes(self._call("token")[0])

    def operator(self) -> bytes:
        return bytes(self._call("operator")[0])

    def set_operator(self, sender: Sender, operator: Address) -> dict[str, Any]:
        return self._transact(sender, "setOperator", hx.address_bytes(operator))

    def set_node_allowed(self, sender: Sender, node: Address, allowed: bool = True) -> dict[str, Any]:
        return self._transact(sender, "setNodeAllowed", hx.address_bytes(node), allowed)

    def set_device_allowed(self, sender: Sender, device: Address, allowed: bool = True) -> dict[str, Any]:
        return self._transact(sender, "setDeviceAllowed", hx.address_bytes(device), allowed)

    def set_nodes_allowed(
        self, sender: Sender, nodes: Sequence[Address], allowed: bool = True
    ) -> dict[str, Any]:
        return self._transact(sender, "setNodesAllowed", [hx.address_bytes(n) for n in nodes], allowed)

    def set_devices_allowed(
        self, sender: Sender, devices: Sequence[Address], allowed: bool = True
    ) -> dict[str, Any]:
        return self._transact(sender, "setDevicesAllowed", [hx.address_bytes(d) for d in devices], allowed)

    def set_price_per_byte(self, sender: Sender, price: int) -> dict[str, Any]:
        return self._transact(sender, "setPricePerByte", price)

    def set_requires_payment(self, sender: Sender, required: bool) -> dict[str, Any]:
        return self._transact(sender, "setRequiresPayment", required)

    def set_token(self, sender: Sender, token: Address) -> dict[str, Any]:
        return self._transact(sender, "setToken", hx.address_bytes(token))


@dataclass(frozen=True)
class Transfer:
    sender: bytes
    recipient: bytes
    value: int


class Chai(_Bound):
    ARTIFACT = "ChaiToken"

    def balance_of(self, account: Address) -> int:
        return int(self._call("balanceOf", hx.address_bytes(account))[0])

    def total_supply(self) -> int:
        return int(self._call("totalSupply")[0])

    def mint(self, sender: Sender, to: Address, value: int) -> dict[str, Any]:
        return self._transact(sender, "mint", hx.address_bytes(to), value)

    def transfer(self, sender: Sender, to: Address, value: int) -> dict[str, Any]:
        return self._transact(sender, "transfer", hx.address_bytes(to), value)

    def approve(self, sender: Sender, spender: Address, value: int) -> dict[str, Any]:
        return self._transact(sender, "approve", hx.address_bytes(spender), value)

    def transfers_in(self, receipt: dict[str, Any]) -> list[Transfer]:
        """The CHAI Transfer events of a mined transaction (a ticket's payment proof, SPEC 5 step 6)."""
        logs = self.abi.decode_logs("Transfer", receipt.get("logs", []), self.address)
        return [Transfer(e["from"], e["to"], e["value"]) for e in logs]


class TicketFields(Protocol):
    """The SPEC 5 ticket fields, as any ticket object (chrnode.ticket) carries them."""

    @property
    def chain_id(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def node(self) -> bytes: ...
    @property
    def fleet(self) -> bytes: ...
    @property
    def total_connections(self) -> int: ...
    @property
    def total_bytes(self) -> int: ...
    @property
    def local_address(self) -> bytes: ...
    @property
    def payment_proof(self) -> bytes: ...
    @property
    def signature(self) -> bytes: ...


@dataclass(frozen=True)
class SubmitResult:
    tx_hash: bytes
    accepted: tuple[int, ...]  # indexes into the submitted batch
    rejected: dict[int, str]  # index -> reason (REJECT_REASONS)
    added_bytes: int  # bytes credited to the node by this batch


def ticket_tuple(ticket: TicketFields) -> tuple[Any, ...]:
    """A ticket in the TicketRegistry.Ticket struct order."""
    return (
        ticket.chain_id,
        ticket.epoch,
        hx.address_bytes(ticket.node),
        hx.address_bytes(ticket.fleet),
        ticket.total_connections,
        ticket.total_bytes,
        bytes(ticket.local_address),
        bytes(ticket.payment_proof),
        bytes(ticket.signature),
    )


class TicketRegistry(_Bound):
    ARTIFACT = "TicketRegistry"
    MAX_BATCH = 256

    def submit_tickets(self, sender: Sender, tickets: Sequence[TicketFields]) -> SubmitResult:
        """Submit a batch (the sender must be the tickets' node); report what the chain accepted."""
        if not tickets:
            raise ValueError("submit_tickets needs at least one ticket")
        if len(tickets) > self.MAX_BATCH:
            raise ValueError(f"at most {self.MAX_BATCH} tickets per batch, got {len(tickets)}")
        receipt = self._transact(sender, "submitTickets", [ticket_tuple(t) for t in tickets])
        accepted = self.abi.decode_logs("TicketAccepted", receipt["logs"], self.address)
        rejected = self.abi.decode_logs("TicketRejected", receipt["logs"], self.address)
        rejected_by_index = {
            int(e["index"]): REJECT_REASONS.get(e["reason"], str(e["reason"])) for e in rejected
        }
        accepted_indexes = tuple(i for i in range(len(tickets)) if i not in rejected_by_index)
        if len(accepted_indexes) != len(accepted):
            raise ContractError(
                f"TicketRegistry reported {len(accepted)} accepted and {len(rejected)} rejected "
                f"tickets for a batch of {len(tickets)}"
            )
        tx_hash = hx.parse_data(receipt["transactionHash"], "receipt transactionHash")
        added = sum(int(e["addedBytes"]) for e in accepted)
        return SubmitResult(tx_hash, accepted_indexes, rejected_by_index, added)

    def bytes_served(self, node: Address, epoch: int) -> int:
        return int(self._call("bytesServed", hx.address_bytes(node), epoch)[0])

    def connections_served(self, node: Address, epoch: int) -> int:
        return int(self._call("connectionsServed", hx.address_bytes(node), epoch)[0])

    def best_totals(self, node: Address, device: Address, fleet: Address, epoch: int) -> tuple[int, int]:
        """(total_connections, total_bytes) of the best accepted ticket for that key."""
        args = (hx.address_bytes(node), hx.address_bytes(device), hx.address_bytes(fleet), epoch)
        connections, total_bytes = self._call("bestTotals", *args)
        return int(connections), int(total_bytes)

    def current_epoch(self) -> int:
        return int(self._call("currentEpoch")[0])

    def epoch_length(self) -> int:
        return int(self._call("epochLength")[0])

    def ticket_digest(self, ticket: TicketFields) -> bytes:
        """The digest the contract verifies (SPEC 5), to cross-check an off-chain encoding."""
        return bytes(self._call("ticketDigest", ticket_tuple(ticket))[0])

    def recover_device(self, ticket: TicketFields) -> bytes:
        return bytes(self._call("recoverDevice", ticket_tuple(ticket))[0])
