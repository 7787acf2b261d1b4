"""Submitting the best tickets of an epoch to the TicketRegistry (SPEC 5 "submits them to the chain
in batches").

    submitter = TicketSubmitter(TicketRegistry(rpc, address), KeySigner(node_key))
    outcomes = submitter.submit(tickets)        # one SubmitOutcome per ticket, in order
    ops = mark_ops(rows, outcomes, time.time()) # TicketMarkSubmitted for the single writer

Tickets go in batches of `batch_size` (at most the registry's 256). A batch that fails because
the chain is unavailable is retried `retries` times with exponential backoff; after that its
tickets are reported `accepted=None` ("not sent", to be tried at the next run) and the remaining
batches are not attempted. A batch the registry reverts as a whole (which its per-ticket checks
never do: a revert means the node cannot pay gas, or the batch is malformed) is reported with
the revert reason and `accepted=None`, and the next batch is tried. Per-ticket verdicts come from
the registry's TicketAccepted / TicketRejected events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgpack

from chrnode.chain.contracts import TicketRegistry
from chrnode.chain.tx import Sender
from chrnode.errors import ChainError, ChainUnavailable
from chrnode.storage.ops import TicketMarkSubmitted
from chrnode.storage.rows import TicketRow
from chrnode.ticket import Ticket

log = logging.getLogger("chrnode.chain")


@dataclass(frozen=True)
class SubmitOutcome:
    """What became of one ticket: accepted True/False by the registry, or None when not sent."""

    accepted: bool | None
    reason: str = ""  # the registry's reject reason, or why it was not sent
    tx_hash: bytes | None = None
    added_bytes: int = 0  # credited by the batch (reported on its first accepted ticket only)


class TicketSubmitter:
    def __init__(
        self,
        registry: TicketRegistry,
        sender: Sender,
        *,
        batch_size: int = 64,
        retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= batch_size <= TicketRegistry.MAX_BATCH:
            raise ValueError(f"batch_size must be 1..{TicketRegistry.MAX_BATCH}, got {batch_size}")
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        self.registry = registry
        self.sender = sender
        self.batch_size = batch_size
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.sleep = sleep

    def submit(self, tickets: Sequence[Ticket]) -> list[SubmitOutcome]:
        outcomes: list[SubmitOutcome] = []
        for start in range(0, len(tickets), self.batch_size):
            batch = tickets[start : start + self.batch_size]
            try:
                outcomes.extend(self._submit_batch(batch))
            except ChainUnavailable as exc:
                rest = len(tickets) - start
                log.warning("ticket submission stopped, %d tickets left for the next run: %s", rest, exc)
                outcomes.extend(SubmitOutcome(None, f"chain unavailable: {exc}") for _ in range(rest))
                break
        return outcomes

    def _submit_batch(self, batch: Sequence[Ticket]) -> list[SubmitOutcome]:
        attempt = 0
        while True:
            try:
                result = self.registry.submit_tickets(self.sender, batch)
            except ChainUnavailable:
                if attempt >= self.retries:
                    raise
                delay = min(self.backoff_max, self.backoff * 2**attempt)
                attempt += 1
                log.info("ticket batch: chain unavailable; retry %d in %.2f s", attempt, delay)
                self.sleep(delay)
                continue
            except ChainError as exc:  # a revert (ContractError) or a broken answer
                log.error("ticket batch of %d refused as a whole: %s", len(batch), exc)
                return [SubmitOutcome(None, f"batch refused: {exc}") for _ in batch]
            break
        outcomes = []
        credited = False
        for index in range(len(batch)):
            if index in result.rejected:
                outcomes.append(SubmitOutcome(False, result.rejected[index], result.tx_hash))
            else:
                added = 0 if credited else result.added_bytes
                credited = True
                outcomes.append(SubmitOutcome(True, "", result.tx_hash, added))
        log.info(
            "submitted %d tickets in 0x%s: %d accepted, %d rejected",
            len(batch),
            result.tx_hash.hex(),
            len(result.accepted),
            len(result.rejected),
        )
        return outcomes


def ticket_of_row(row: TicketRow) -> Ticket:
    """The Ticket a storage row holds (its msgpack wire map, SPEC 5)."""
    return Ticket.from_wire(msgpack.unpackb(row.ticket, raw=False))


def mark_ops(
    rows: Sequence[TicketRow], outcomes: Sequence[SubmitOutcome], now: float
) -> list[TicketMarkSubmitted]:
    """Storage ops recording the tickets that went to the chain (not those never sent)."""
    if len(rows) != len(outcomes):
        raise ValueError(f"{len(rows)} rows but {len(outcomes)} outcomes")
    return [
        TicketMarkSubmitted(row.device, row.fleet, row.epoch, row.total_bytes, now, out.tx_hash, out.accepted)
        for row, out in zip(rows, outcomes, strict=True)
        if out.tx_hash is not None
    ]
