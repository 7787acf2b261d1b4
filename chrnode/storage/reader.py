"""Queries the node needs (SPEC 10). Works on the writer's database or a read-only one.

Each query is one statement, so on a WAL file it reads one consistent committed state without
waiting for the writer. Expired DHT objects and L2 cache entries are never returned, whether or
not the writer has purged them yet.
"""

from __future__ import annotations

from typing import Any

from chrnode.storage.boundary import converting, run_query
from chrnode.storage.db import NodeDatabase
from chrnode.storage.models import CacheL2, DhtObjectModel, Kv, NodeStats, PeerHistory, RewardTracking, Ticket
from chrnode.storage.rows import DhtObject, NodeStatsRow, PeerRow, RewardRow, TicketRow
from chrnode.storage.schema import read_schema_version

Row = dict[str, Any]


def first_row(db: NodeDatabase, query: Any) -> Row | None:
    """The first row of a model select as a dict, or None."""
    for row in run_query(db, query.dicts().limit(1)):
        return dict(row)
    return None


def all_rows(db: NodeDatabase, query: Any) -> list[Row]:
    return [dict(row) for row in run_query(db, query.dicts())]


def ticket_row(row: Row) -> TicketRow:
    accepted = row["accepted"]
    return TicketRow(
        device=bytes(row["device"]),
        fleet=bytes(row["fleet"]),
        epoch=row["epoch"],
        total_bytes=row["total_bytes"],
        total_connections=row["total_connections"],
        ticket=bytes(row["ticket"]),
        received_at=row["received_at"],
        submitted_at=row["submitted_at"],
        submit_tx=None if row["submit_tx"] is None else bytes(row["submit_tx"]),
        accepted=None if accepted is None else bool(accepted),
    )


def peer_row(row: Row) -> PeerRow:
    # The seed's columns are nullable; a row another tool wrote may have gaps.
    return PeerRow(
        peer_id=row["peer_id"],
        first_seen=row["first_seen"] or 0,
        last_seen=row["last_seen"] or 0,
        connection_count=row["connection_count"] or 0,
        reliability_score=1.0 if row["reliability_score"] is None else row["reliability_score"],
    )


def _node_stats_row(row: Row) -> NodeStatsRow:
    return NodeStatsRow(
        timestamp=row["timestamp"],
        connections=row["connections"] or 0,
        bandwidth_in=row["bandwidth_in"] or 0,
        bandwidth_out=row["bandwidth_out"] or 0,
        uptime_seconds=row["uptime_seconds"] or 0,
    )


def _reward_row(row: Row) -> RewardRow:
    return RewardRow(
        period_start=row["period_start"],
        period_end=row["period_end"] or row["period_start"],
        uptime_score=row["uptime_score"] or 0.0,
        performance_score=row["performance_score"] or 0.0,
        chr_tokens_earned=row["chr_tokens_earned"] or 0.0,
    )


def _dht_object(row: Row) -> DhtObject:
    return DhtObject(
        key=bytes(row["key"]),
        value=bytes(row["value"]),
        signer=bytes(row["signer"]),
        version=row["version"],
        expires_at=row["expires_at"],
    )


class Reader:
    """Read queries; every error is a StorageError naming the file."""

    def __init__(self, db: NodeDatabase) -> None:
        self._db = db

    def _one(self, what: str, query: Any) -> Row | None:
        with converting(self._db.path, f"reading {what}"):
            return first_row(self._db, query)

    def _all(self, what: str, query: Any) -> list[Row]:
        with converting(self._db.path, f"reading {what}"):
            return all_rows(self._db, query)

    def schema_version(self) -> int:
        with converting(self._db.path, "reading the schema version"):
            return read_schema_version(self._db)

    def kv_get(self, key: str) -> bytes | None:
        row = self._one(f"kv {key!r}", Kv.select(Kv.value).where(Kv.key == key))
        return None if row is None else bytes(row["value"])

    def best_ticket(self, device: bytes, fleet: bytes, epoch: int) -> TicketRow | None:
        """The stored (best) ticket for (device, fleet, epoch), or None."""
        where = (Ticket.device == device) & (Ticket.fleet == fleet) & (Ticket.epoch == epoch)
        row = self._one("a ticket", Ticket.select().where(where))
        return None if row is None else ticket_row(row)

    def unsubmitted_tickets(self, epoch: int, limit: int = 100) -> list[TicketRow]:
        """Tickets of `epoch` not yet sent to the chain, largest first (they pay the most)."""
        query = (
            Ticket.select()
            .where((Ticket.epoch == epoch) & Ticket.submitted_at.is_null())
            .order_by(Ticket.total_bytes.desc(), Ticket.device, Ticket.fleet)
            .limit(limit)
        )
        return [ticket_row(row) for row in self._all(f"unsubmitted tickets of epoch {epoch}", query)]

    def latest_node_stats(self, limit: int = 60, since: int | None = None) -> list[NodeStatsRow]:
        """The newest node_stats rows, newest first; with `since`, only rows at or after it."""
        query = NodeStats.select()
        if since is not None:
            query = query.where(NodeStats.timestamp >= since)
        query = query.order_by(NodeStats.timestamp.desc()).limit(limit)
        return [_node_stats_row(row) for row in self._all("node_stats", query)]

    def peers(self, limit: int = 100) -> list[PeerRow]:
        """Known peers, most recently seen first."""
        query = PeerHistory.select().order_by(PeerHistory.last_seen.desc(), PeerHistory.peer_id).limit(limit)
        return [peer_row(row) for row in self._all("peer_history", query)]

    def peer(self, peer_id: str) -> PeerRow | None:
        row = self._one(f"peer {peer_id!r}", PeerHistory.select().where(PeerHistory.peer_id == peer_id))
        return None if row is None else peer_row(row)

    def reward_periods(self, limit: int = 30) -> list[RewardRow]:
        """Reward periods, newest first."""
        query = RewardTracking.select().order_by(RewardTracking.period_start.desc()).limit(limit)
        return [_reward_row(row) for row in self._all("reward_tracking", query)]

    def dht_get(self, key: bytes, now: float) -> DhtObject | None:
        """The stored object under `key` unless it has expired by `now`."""
        where = (DhtObjectModel.key == key) & (DhtObjectModel.expires_at > now)
        row = self._one("a DHT object", DhtObjectModel.select().where(where))
        return None if row is None else _dht_object(row)

    def dht_live(self, now: float, limit: int = 1000) -> list[DhtObject]:
        """Unexpired objects, soonest to expire first (what republishing needs next)."""
        query = (
            DhtObjectModel.select()
            .where(DhtObjectModel.expires_at > now)
            .order_by(DhtObjectModel.expires_at, DhtObjectModel.key)
            .limit(limit)
        )
        return [_dht_object(row) for row in self._all("DHT objects", query)]

    def cache_get(self, namespace: str, key: str, now: float) -> bytes | None:
        """The L2 cache value unless it has expired by `now`."""
        where = (CacheL2.namespace == namespace) & (CacheL2.key == key) & (CacheL2.expires_at > now)
        row = self._one(f"cache {namespace}/{key}", CacheL2.select(CacheL2.value).where(where))
        return None if row is None else bytes(row["value"])
