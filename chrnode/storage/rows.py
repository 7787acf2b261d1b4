"""Plain rows the storage layer hands out (SPEC 10).

Readers and the writer return these frozen dataclasses rather than peewee model instances, so a row
can cross an actor boundary (they pickle) and callers never touch a database object by accident.
This module imports nothing from peewee on purpose: `chrnode.stats` builds `NodeStatsRow` without
pulling in the database layer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeStatsRow:
    """One minute of node activity: the seed's `node_stats` table."""

    timestamp: int
    connections: int
    bandwidth_in: int
    bandwidth_out: int
    uptime_seconds: int


@dataclass(frozen=True, slots=True)
class PeerRow:
    """What the node remembers about a peer: the seed's `peer_history` table (SPEC 6)."""

    peer_id: str
    first_seen: int
    last_seen: int
    connection_count: int
    reliability_score: float


@dataclass(frozen=True, slots=True)
class RewardRow:
    """One reward period: the seed's `reward_tracking` table."""

    period_start: int
    period_end: int
    uptime_score: float
    performance_score: float
    chr_tokens_earned: float


@dataclass(frozen=True, slots=True)
class TicketRow:
    """The best ticket stored for one (device, fleet, epoch) (SPEC 5).

    `ticket` is the ticket's wire encoding, kept verbatim so it can be re-sent or submitted as
    received. `submitted_at`/`submit_tx` are set once it was sent to the chain, `accepted` once the
    chain's answer is known.
    """

    device: bytes
    fleet: bytes
    epoch: int
    total_bytes: int
    total_connections: int
    ticket: bytes
    received_at: float
    submitted_at: float | None
    submit_tx: bytes | None
    accepted: bool | None


@dataclass(frozen=True, slots=True)
class TicketUpsertResult:
    """What `TicketUpsert` did: `stored` is False when the stored ticket was as good or better;
    `row` is the ticket stored after the operation either way (the `too_low` answer needs it)."""

    stored: bool
    row: TicketRow


@dataclass(frozen=True, slots=True)
class DhtObject:
    """A signed DHT value as stored (SPEC 6); the DHT layer checked signature and key first."""

    key: bytes
    value: bytes
    signer: bytes
    version: int
    expires_at: float
