"""Tickets: a device's signed promise to pay one node for traffic (SPEC 5). Pure code, no storage.

The signature is over keccak256 of the ABI encoding of

    (uint256 chain_id, uint256 epoch, address node, address fleet,
     uint256 total_connections, uint256 total_bytes, bytes32 keccak256(local_address))

so a Solidity contract can check it with ecrecover. Every field is a static 32-byte ABI word, so the
encoding is built directly (byte-identical to ``eth_abi.encode``, which a test checks) to keep the
verification path fast.

:class:`TicketValidator` runs the validation steps of SPEC 5 in order. Steps 4 (fleet) and 6
(payment) read the chain, so they are hooks (:class:`FleetCheck`, :class:`PaymentCheck`) filled in
by the chain layer; the defaults allow everything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from chrnode.crypto import ADDRESS_LENGTH, SIGNATURE_LENGTH, PrivateKey, keccak256, recover_address
from chrnode.edge import codes
from chrnode.errors import CryptoError, RemoteProtocolError, TicketError

__all__ = [
    "DEFAULT_EPOCH_LENGTH",
    "AllowAllFleet",
    "AllowAllPayment",
    "FleetCheck",
    "PaymentCheck",
    "Ticket",
    "TicketAccepted",
    "TicketTooLowError",
    "TicketValidator",
    "epoch_of",
]

DEFAULT_EPOCH_LENGTH = 30 * 24 * 3600  # SPEC 5: 30 days
MAX_UINT64 = 0xFFFF_FFFF_FFFF_FFFF  # msgpack integers: the wire range of every ticket number
MAX_LOCAL_ADDRESS = 256
PAYMENT_PROOF_LENGTH = 32
WIRE_FIELDS = (
    "chain_id",
    "epoch",
    "node",
    "fleet",
    "total_connections",
    "total_bytes",
    "local_address",
    "payment_proof",
    "signature",
)

_ADDRESS_PAD = bytes(12)


def epoch_of(timestamp: int, epoch_length: int = DEFAULT_EPOCH_LENGTH) -> int:
    """SPEC 5: floor(block_timestamp / epoch_length)."""
    if epoch_length <= 0:
        raise ValueError(f"epoch_length must be positive, got {epoch_length}")
    return int(timestamp) // epoch_length


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


@dataclass(frozen=True, slots=True)
class Ticket:
    """The SPEC 5 fields. Addresses are 20 raw bytes; ``signature`` is empty until signed."""

    chain_id: int
    epoch: int
    node: bytes
    fleet: bytes
    total_connections: int
    total_bytes: int
    local_address: bytes = b""
    payment_proof: bytes = b""
    signature: bytes = b""

    def ticket_digest(self) -> bytes:
        """keccak256 of the ABI encoding the device signs (see the module docstring)."""
        for name in ("chain_id", "epoch", "total_connections", "total_bytes"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value < 2**256:
                raise CryptoError(f"ticket {name} must be an integer in uint256 range, got {value!r}")
        for name in ("node", "fleet"):
            if len(getattr(self, name)) != ADDRESS_LENGTH:
                raise CryptoError(f"ticket {name} must be a {ADDRESS_LENGTH}-byte address")
        encoded = b"".join(
            (
                _word(self.chain_id),
                _word(self.epoch),
                _ADDRESS_PAD + self.node,
                _ADDRESS_PAD + self.fleet,
                _word(self.total_connections),
                _word(self.total_bytes),
                keccak256(self.local_address),
            )
        )
        return keccak256(encoded)

    def sign(self, key: PrivateKey) -> Ticket:
        """A copy of this ticket signed by ``key`` (the device)."""
        return dataclasses.replace(self, signature=key.sign_hash(self.ticket_digest()))

    def recover(self) -> bytes:
        """The 20-byte address that signed this ticket; CryptoError if the signature is malformed."""
        return recover_address(self.ticket_digest(), self.signature)

    def is_lower_than(self, other: Ticket) -> bool:
        """Whether either total is below ``other``'s (SPEC 5 step 5: totals are cumulative)."""
        return self.total_bytes < other.total_bytes or self.total_connections < other.total_connections

    def to_wire(self) -> dict[str, Any]:
        """The msgpack map of SPEC 5 (byte fields as bin)."""
        return {name: getattr(self, name) for name in WIRE_FIELDS}

    @classmethod
    def from_wire(cls, obj: object) -> Ticket:
        """A ticket from its msgpack map; RemoteProtocolError(bad_payload) naming the bad field."""
        if not isinstance(obj, dict):
            raise _bad("ticket", f"must be a map of the SPEC 5 fields, got {type(obj).__name__}")
        return cls(
            chain_id=_uint(obj, "chain_id"),
            epoch=_uint(obj, "epoch"),
            node=_bin(obj, "node", ADDRESS_LENGTH, ADDRESS_LENGTH),
            fleet=_bin(obj, "fleet", ADDRESS_LENGTH, ADDRESS_LENGTH),
            total_connections=_uint(obj, "total_connections"),
            total_bytes=_uint(obj, "total_bytes"),
            local_address=_bin(obj, "local_address", 0, MAX_LOCAL_ADDRESS),
            payment_proof=_payment_proof(obj),
            signature=_bin(obj, "signature", SIGNATURE_LENGTH, SIGNATURE_LENGTH),
        )


def _hex(address: bytes) -> str:
    return "0x" + bytes(address).hex()


def _bad(field: str, problem: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"{field} {problem}", codes.BAD_PAYLOAD)


def _uint(obj: dict[Any, Any], name: str) -> int:
    if name not in obj:
        raise _bad(f"ticket.{name}", "is missing")
    value = obj[name]
    if type(value) is not int or not 0 <= value <= MAX_UINT64:
        raise _bad(f"ticket.{name}", f"must be an integer 0..2^64-1, got {value!r:.40}")
    return value


def _bin(obj: dict[Any, Any], name: str, min_len: int, max_len: int) -> bytes:
    if name not in obj:
        if min_len == 0:
            return b""
        raise _bad(f"ticket.{name}", "is missing")
    value = obj[name]
    if not isinstance(value, bytes):
        raise _bad(f"ticket.{name}", f"must be msgpack bin, got {type(value).__name__}")
    if not min_len <= len(value) <= max_len:
        size = f"{min_len}" if min_len == max_len else f"{min_len}..{max_len}"
        raise _bad(f"ticket.{name}", f"must be {size} bytes, got {len(value)}")
    return value


def _payment_proof(obj: dict[Any, Any]) -> bytes:
    proof = _bin(obj, "payment_proof", 0, PAYMENT_PROOF_LENGTH)
    if len(proof) not in (0, PAYMENT_PROOF_LENGTH):
        problem = f"must be a 32-byte transaction hash or empty, got {len(proof)} bytes"
        raise _bad("ticket.payment_proof", problem)
    return proof


class TicketTooLowError(TicketError):
    """SPEC 5 step 5: the ticket is below the stored one, which the answer carries as ``latest``."""

    def __init__(self, message: str, latest: Ticket) -> None:
        super().__init__(codes.TOO_LOW, message)
        self.latest = latest


class FleetCheck(Protocol):
    """SPEC 5 step 4: the fleet contract's allowlists, read through the cache by the chain layer."""

    def node_allowed(self, fleet: bytes, node: bytes) -> bool: ...

    def device_allowed(self, fleet: bytes, device: bytes) -> bool: ...


class PaymentCheck(Protocol):
    """SPEC 5 step 6: raise TicketError(payment_missing | payment_invalid) when payment is not proven."""

    def check_payment(self, ticket: Ticket, device: bytes) -> None: ...


class AllowAllFleet:
    """Default fleet hook until the chain layer supplies one: every node and device is allowed."""

    def node_allowed(self, fleet: bytes, node: bytes) -> bool:
        return True

    def device_allowed(self, fleet: bytes, device: bytes) -> bool:
        return True


class AllowAllPayment:
    """Default payment hook: no fleet requires payment."""

    def check_payment(self, ticket: Ticket, device: bytes) -> None:
        return None


@dataclass(frozen=True, slots=True)
class TicketAccepted:
    """A ticket that passed validation, with how much it adds over the stored one."""

    ticket: Ticket
    added_bytes: int
    added_connections: int


class TicketValidator:
    """SPEC 5 validation for one node. Pure: the caller passes the stored best ticket in."""

    def __init__(
        self,
        node: bytes,
        chain_id: int,
        *,
        fleet_check: FleetCheck | None = None,
        payment_check: PaymentCheck | None = None,
        max_jump_bytes: int = 16 * 1024**3,
        max_jump_connections: int = 100_000,
    ) -> None:
        if len(node) != ADDRESS_LENGTH:
            raise ValueError(f"node must be a {ADDRESS_LENGTH}-byte address")
        self.node = bytes(node)
        self.chain_id = chain_id
        self.fleet_check: FleetCheck = fleet_check or AllowAllFleet()
        self.payment_check: PaymentCheck = payment_check or AllowAllPayment()
        self.max_jump_bytes = max_jump_bytes
        self.max_jump_connections = max_jump_connections

    def validate(
        self, ticket: Ticket, device: bytes, current_epoch: int, stored: Ticket | None = None
    ) -> TicketAccepted:
        """Run steps 1-6 in order; TicketError (TicketTooLowError for step 5) on the first that fails.

        ``device`` is the address authenticated by hello; ``stored`` the best ticket kept for
        (device, ticket.fleet, ticket.epoch), or None. The steps are also public, one method
        each, so that a caller whose fleet and payment answers come asynchronously
        (chrnode.edge.usage.TicketDesk) runs the same steps with its awaits in between.
        """
        self.check_signed(ticket, device, current_epoch)
        node_ok = self.fleet_check.node_allowed(ticket.fleet, self.node)
        device_ok = node_ok and self.fleet_check.device_allowed(ticket.fleet, device)
        self.check_fleet(ticket, device, node_ok, device_ok)
        accepted = self.check_totals(ticket, stored)
        self.payment_check.check_payment(ticket, device)  # 6. payment, where the fleet requires it
        return accepted

    def check_signed(self, ticket: Ticket, device: bytes, current_epoch: int) -> None:
        """Steps 1-3, no I/O: the epoch, the signer (the one signature recovery), node and chain."""
        epoch = ticket.epoch
        # 1. the current epoch or the previous one
        expected = f"expected the current epoch {current_epoch} or the previous one"
        if epoch > current_epoch:
            raise TicketError(codes.EPOCH_TOO_HIGH, f"ticket epoch {epoch} is in the future: {expected}")
        if epoch < current_epoch - 1:
            raise TicketError(codes.EPOCH_TOO_LOW, f"ticket epoch {epoch} is too old: {expected}")
        # 2. signed by the authenticated device
        try:
            signer = ticket.recover()
        except CryptoError as exc:
            raise TicketError(codes.BAD_SIGNATURE, f"ticket signature is invalid: {exc}") from exc
        if signer != device:
            message = f"ticket is signed by {_hex(signer)}, not by the connected device {_hex(device)}"
            raise TicketError(codes.WRONG_DEVICE, message)
        # 3. for this node (and this chain: a signature for another chain is not ours to redeem)
        if ticket.node != self.node:
            message = f"ticket is for node {_hex(ticket.node)}, this node is {_hex(self.node)}"
            raise TicketError(codes.WRONG_NODE, message)
        if ticket.chain_id != self.chain_id:
            message = f"ticket is for chain {ticket.chain_id}, this node serves chain {self.chain_id}"
            raise TicketError(codes.WRONG_CHAIN, message)

    def check_fleet(self, ticket: Ticket, device: bytes, node_ok: bool, device_ok: bool) -> None:
        """Step 4, given the fleet's answers: it allows this node, then this device."""
        fleet = _hex(ticket.fleet)
        # The messages say who can fix it and how (issue 7): the fleet's operator, with chr-node fleet.
        if not node_ok:
            message = (
                f"fleet {fleet} does not allow this node {_hex(self.node)}: use a fleet that lists it, "
                f"or ask the fleet operator to run `chr-node fleet allow --node {_hex(self.node)}`"
            )
            raise TicketError(codes.FLEET_DENIED_NODE, message)
        if not device_ok:
            message = (
                f"fleet {fleet} does not allow device {_hex(device)}: ask the fleet operator to run "
                f"`chr-node fleet allow {_hex(device)}` (or `chr-node fleet open` to admit any device)"
            )
            raise TicketError(codes.FLEET_DENIED_DEVICE, message)

    def check_totals(self, ticket: Ticket, stored: Ticket | None) -> TicketAccepted:
        """Step 5: cumulative totals, not below the stored ticket, bounded growth."""
        added_bytes, added_connections = self._check_totals(ticket, stored)
        return TicketAccepted(ticket, added_bytes, added_connections)

    def _check_totals(self, ticket: Ticket, stored: Ticket | None) -> tuple[int, int]:
        base_bytes = base_connections = 0
        if stored is not None:
            if stored.fleet != ticket.fleet or stored.epoch != ticket.epoch:
                raise ValueError("stored ticket must be the one kept for the same (device, fleet, epoch)")
            if ticket.is_lower_than(stored):
                raise TicketTooLowError(
                    f"ticket totals ({ticket.total_bytes} bytes, {ticket.total_connections} connections) "
                    f"are below the stored ticket ({stored.total_bytes} bytes, "
                    f"{stored.total_connections} connections)",
                    stored,
                )
            base_bytes, base_connections = stored.total_bytes, stored.total_connections
        added_bytes = ticket.total_bytes - base_bytes
        added_connections = ticket.total_connections - base_connections
        if added_bytes > self.max_jump_bytes or added_connections > self.max_jump_connections:
            raise TicketError(
                codes.JUMP_TOO_LARGE,
                f"ticket adds {added_bytes} bytes and {added_connections} connections in one step; this node "
                f"accepts at most {self.max_jump_bytes} bytes and {self.max_jump_connections} connections",
            )
        return added_bytes, added_connections
