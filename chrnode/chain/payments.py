"""Payment proofs of tickets (SPEC 5 step 6): a mined CHAI transfer that pays the fleet.

Where a fleet's `requiresPayment()` is true, a ticket's `payment_proof` must be the hash of a
mined transaction (receipt status 1) whose receipt holds Transfer events of the fleet's `token()`
paying the fleet at least `pricePerByte() * total_bytes`. The payee is the fleet contract itself or
its operator (the fleet contract defines no separate payee; the operator is who runs it), and the
transfers to either in that one transaction are added up.

A payment belongs to its payer (SPEC 5 step 6): only Transfers whose `from` is the ticket's device
count. Delegation (a wallet paying for a device) is not supported: the device pays from its own
address (its key is an Ethereum key), so nothing seen on the chain can be presented by another
device, and a device that shows someone else's payment is refused before the payment is claimed,
leaving it to its payer.

A proof is checked against the chain once; the receipt's facts are cached (category "tickets",
one hour, refreshed ahead of expiry) and the proof is recorded as claimed by (device, fleet,
epoch): the same transaction presented for another device, fleet or epoch is refused. Claims are
kept in memory and in the L2 store, so they outlive a restart.

Error codes (TicketError.code), in the order they are checked:

    payment_missing          the fleet requires payment and the ticket has no proof
    payment_unknown          no mined transaction has this hash (unknown, or still pending)
    payment_failed           the transaction reverted (receipt status 0)
    payment_invalid          the transaction moved no tokens of the fleet's CHAI token
    payment_wrong_recipient  it transferred CHAI, but not to the fleet or its operator
    payment_wrong_payer      it paid the fleet, but not from the ticket's device
    payment_too_small        it paid less than price_per_byte * total_bytes
    payment_reused           it already paid for another device's (or fleet's, or epoch's) ticket
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from chrnode.chain import hexcodec as hx
from chrnode.chain.cache_l2 import L2Store, decode_value, encode_value
from chrnode.chain.contracts import Chai
from chrnode.chain.service import ChainService
from chrnode.edge import codes
from chrnode.errors import ChrError, TicketError
from chrnode.ticket import Ticket

log = logging.getLogger("chrnode.chain")

PAYMENT_MISSING = codes.PAYMENT_MISSING
PAYMENT_INVALID = codes.PAYMENT_INVALID
PAYMENT_UNKNOWN = "payment_unknown"
PAYMENT_FAILED = "payment_failed"
PAYMENT_WRONG_RECIPIENT = "payment_wrong_recipient"
PAYMENT_WRONG_PAYER = "payment_wrong_payer"
PAYMENT_TOO_SMALL = "payment_too_small"
PAYMENT_REUSED = "payment_reused"
PAYMENT_CODES = (
    PAYMENT_MISSING,
    PAYMENT_UNKNOWN,
    PAYMENT_FAILED,
    PAYMENT_INVALID,
    PAYMENT_WRONG_RECIPIENT,
    PAYMENT_WRONG_PAYER,
    PAYMENT_TOO_SMALL,
    PAYMENT_REUSED,
)
CLAIM_NAMESPACE = "chain.payment_claims"
CLAIM_TTL = 400 * 24 * 3600.0  # a claim must outlive every epoch its transaction could be shown for
MEMORY_CLAIMS = 100_000


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


class PaymentLedger:
    """Which (device, fleet, epoch) each payment transaction was accepted for (memory + L2)."""

    def __init__(
        self, store: L2Store | None = None, *, clock: Callable[[], float] = time.time, ttl: float = CLAIM_TTL
    ) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self._claims: OrderedDict[bytes, tuple[bytes, bytes, int]] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, tx_hash: bytes, device: bytes, fleet: bytes, epoch: int) -> None:
        """Record the claim, or raise TicketError(payment_reused) if another one holds the tx."""
        wanted = (bytes(device), bytes(fleet), int(epoch))
        with self._lock:  # check-and-claim is atomic: two devices racing for one tx cannot both win
            holder = self._claims.get(tx_hash) or self._stored(tx_hash)
            if holder is not None and holder != wanted:
                device_, fleet_, epoch_ = holder
                raise TicketError(
                    PAYMENT_REUSED,
                    f"payment 0x{tx_hash.hex()} already paid for device {_hex(device_)} in fleet "
                    f"{_hex(fleet_)}, epoch {epoch_}; each ticket key needs its own payment",
                )
            self._claims[tx_hash] = wanted
            self._claims.move_to_end(tx_hash)
            while len(self._claims) > MEMORY_CLAIMS:
                self._claims.popitem(last=False)
        if holder is None and self.store is not None:
            try:
                blob = encode_value(list(wanted))
                self.store.put(CLAIM_NAMESPACE, tx_hash.hex(), blob, self.clock() + self.ttl)
            except ChrError as exc:  # the memory record still guards this process
                log.warning("cannot persist the claim of payment 0x%s: %s", tx_hash.hex(), exc)

    def holder(self, tx_hash: bytes) -> tuple[bytes, bytes, int] | None:
        with self._lock:
            return self._claims.get(tx_hash) or self._stored(tx_hash)

    def _stored(self, tx_hash: bytes) -> tuple[bytes, bytes, int] | None:
        if self.store is None:
            return None
        try:
            raw = self.store.get(CLAIM_NAMESPACE, tx_hash.hex(), self.clock())
        except ChrError as exc:
            log.warning("cannot read the claim of payment 0x%s: %s", tx_hash.hex(), exc)
            return None
        if raw is None:
            return None
        try:
            device, fleet, epoch = decode_value(raw)
            holder = (bytes(device), bytes(fleet), int(epoch))
        except (ValueError, TypeError) as exc:
            log.warning("ignoring an unreadable claim of payment 0x%s: %s", tx_hash.hex(), exc)
            return None
        self._claims[tx_hash] = holder
        return holder


class ChainPaymentCheck:
    """chrnode.ticket's PaymentCheck (SPEC 5 step 6) over a ChainService and a PaymentLedger."""

    def __init__(self, service: ChainService, ledger: PaymentLedger | None = None) -> None:
        self.service = service
        self.ledger = ledger if ledger is not None else PaymentLedger()

    def check_payment(self, ticket: Ticket, device: bytes) -> None:
        terms = self.service.fleet_terms(ticket.fleet)
        if not terms.requires_payment:
            return
        fleet = _hex(ticket.fleet)
        required = terms.price_per_byte * ticket.total_bytes
        proof = ticket.payment_proof
        if not proof:
            raise TicketError(
                PAYMENT_MISSING,
                f"fleet {fleet} requires payment: the ticket needs payment_proof, the hash of a CHAI "
                f"transfer of at least {required} to the fleet",
            )
        tx = _hex(proof)
        facts = self.payment_facts(proof, terms.token)
        if facts is None:
            raise TicketError(PAYMENT_UNKNOWN, f"payment {tx} is not a mined transaction on this chain")
        status, transfers = facts
        if status != 1:
            raise TicketError(PAYMENT_FAILED, f"payment {tx} reverted (receipt status {status})")
        if not transfers:
            token = _hex(terms.token)
            raise TicketError(PAYMENT_INVALID, f"payment {tx} moved none of the fleet's CHAI token {token}")
        payees = (ticket.fleet, terms.operator)
        to_fleet = [(payer, value) for payer, to, value in transfers if to in payees]
        if not to_fleet:
            recipients = ", ".join(sorted({_hex(to) for _, to, _ in transfers}))
            raise TicketError(
                PAYMENT_WRONG_RECIPIENT,
                f"payment {tx} paid {recipients}, not fleet {fleet} or its operator {_hex(terms.operator)}",
            )
        paid = sum(value for payer, value in to_fleet if payer == device)
        if not any(payer == device for payer, _ in to_fleet):
            payers = ", ".join(sorted({_hex(payer) for payer, _ in to_fleet}))
            raise TicketError(
                PAYMENT_WRONG_PAYER,
                f"payment {tx} was paid by {payers}, not by this device {_hex(device)}: a payment "
                "counts only for the device that sent it",
            )
        if paid < required:
            raise TicketError(
                PAYMENT_TOO_SMALL,
                f"payment {tx} paid {paid}, the ticket's {ticket.total_bytes} bytes at "
                f"{terms.price_per_byte} per byte cost {required}",
            )
        self.ledger.claim(proof, device, ticket.fleet, ticket.epoch)

    def payment_facts(
        self, tx_hash: bytes, token: bytes
    ) -> tuple[int, list[tuple[bytes, bytes, int]]] | None:
        """(receipt status, [(sender, recipient, value)] of `token` Transfers) of a mined tx, or None."""

        def load() -> list[Any] | None:
            chai = Chai(self.service.rpc, token)
            receipt = self.service.rpc.get_transaction_receipt(tx_hash)
            if receipt is None:
                return None
            status = hx.parse_quantity(receipt["status"], "receipt status")
            return [status, [[t.sender, t.recipient, t.value] for t in chai.transfers_in(receipt)]]

        # "payment2": the facts carry the sender since the payer must be the device; a cached entry
        # of the older shape (recipient, value) is never read as this one.
        key = f"payment2:{tx_hash.hex()}:{token.hex()}"
        facts = self.service.cache.fetch("tickets", key, load, keep=lambda value: value is not None).value
        if facts is None:
            return None
        status, transfers = facts
        return int(status), [(bytes(payer), bytes(to), int(value)) for payer, to, value in transfers]
