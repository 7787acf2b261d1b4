"""The single writer (SPEC 10): applies batches of write ops, each batch in one transaction.

Used by the Model.Sql actor, the only process that writes the file. `apply` either commits every
op of the batch or none of them; when it returns, the batch is on disk (synchronous=FULL, see
db.py), so the actor may acknowledge it. Any failure (a bad op, a constraint, a full disk) rolls
the whole batch back and raises StorageError; the writer stays usable for the next batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from chrnode.errors import StorageError
from chrnode.storage.boundary import converting, run_query
from chrnode.storage.db import NodeDatabase
from chrnode.storage.models import CacheL2, DhtObjectModel, Kv, NodeStats, PeerHistory, RewardTracking, Ticket
from chrnode.storage.ops import (
    RELIABILITY_WEIGHT,
    CacheDelete,
    CachePurgeExpired,
    CachePut,
    DhtPurgeExpired,
    DhtPut,
    KvDelete,
    KvSet,
    PeerSeen,
    RewardPeriod,
    StatsPrune,
    StatsRollup,
    TicketMarkSubmitted,
    TicketUpsert,
    WriteOp,
)
from chrnode.storage.reader import first_row, peer_row, ticket_row
from chrnode.storage.rows import PeerRow, TicketRow, TicketUpsertResult

log = logging.getLogger("chrnode.storage")

WriteResult = bool | int | None | TicketUpsertResult | PeerRow
"""What one op yields; each op's docstring says which."""


class Writer:
    """Applies batches of WriteOp to the writer's database."""

    def __init__(self, db: NodeDatabase, clock: Callable[[], float] = time.time) -> None:
        if db.readonly:
            raise StorageError(f"SQLite database {db.path}: a Writer needs the database opened for writing")
        self._db = db
        self._clock = clock

    def apply(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """Run `ops` in one transaction and return one result per op, in order."""
        for index, op in enumerate(ops):
            if not isinstance(op, WriteOp):
                raise StorageError(f"write batch item {index}: got {type(op).__name__}; expected a WriteOp")
            op.check()  # again: an op that arrived pickled never ran __init__
        if not ops:
            return []
        with converting(self._db.path, f"writing a batch of {len(ops)} ops"), self._db.atomic():
            results = [self._apply_one(op) for op in ops]
        return results

    def _apply_one(self, op: WriteOp) -> WriteResult:
        db = self._db
        match op:
            case KvSet(key, value):
                run_query(db, Kv.insert(key=key, value=value, updated_at=self._clock()).on_conflict_replace())
                return None
            case KvDelete(key):
                return bool(run_query(db, Kv.delete().where(Kv.key == key)))
            case StatsRollup(rows):
                for row in rows:
                    run_query(
                        db,
                        NodeStats.insert(
                            timestamp=row.timestamp,
                            connections=row.connections,
                            bandwidth_in=row.bandwidth_in,
                            bandwidth_out=row.bandwidth_out,
                            uptime_seconds=row.uptime_seconds,
                        ).on_conflict_replace(),
                    )
                return len(rows)
            case StatsPrune(before):
                return int(run_query(db, NodeStats.delete().where(NodeStats.timestamp < before)))
            case TicketUpsert():
                return self._ticket_upsert(op)
            case TicketMarkSubmitted():
                return self._ticket_mark_submitted(op)
            case PeerSeen():
                return self._peer_seen(op)
            case RewardPeriod(start, end, uptime, performance, earned):
                query = RewardTracking.insert(
                    period_start=start,
                    period_end=end,
                    uptime_score=uptime,
                    performance_score=performance,
                    chr_tokens_earned=earned,
                ).on_conflict_replace()
                run_query(db, query)
                return None
            case DhtPut():
                return self._dht_put(op)
            case DhtPurgeExpired(now):
                return int(run_query(db, DhtObjectModel.delete().where(DhtObjectModel.expires_at <= now)))
            case CachePut(namespace, key, value, expires_at):
                query = CacheL2.insert(
                    namespace=namespace, key=key, value=value, expires_at=expires_at
                ).on_conflict_replace()
                run_query(db, query)
                return None
            case CacheDelete(namespace, key):
                where = (CacheL2.namespace == namespace) & (CacheL2.key == key)
                return bool(run_query(db, CacheL2.delete().where(where)))
            case CachePurgeExpired(now):
                return int(run_query(db, CacheL2.delete().where(CacheL2.expires_at <= now)))
        raise StorageError(f"write op {type(op).__name__} is not known to this writer")

    def _ticket_upsert(self, op: TicketUpsert) -> TicketUpsertResult:
        stored = first_row(self._db, Ticket.select().where(_ticket_key(op.device, op.fleet, op.epoch)))
        if stored is not None and op.total_bytes <= stored["total_bytes"]:
            return TicketUpsertResult(stored=False, row=ticket_row(stored))
        row = TicketRow(
            device=op.device,
            fleet=op.fleet,
            epoch=op.epoch,
            total_bytes=op.total_bytes,
            total_connections=op.total_connections,
            ticket=op.ticket,
            received_at=op.received_at,
            submitted_at=None,
            submit_tx=None,
            accepted=None,
        )
        run_query(self._db, Ticket.insert(**_ticket_values(row)).on_conflict_replace())
        return TicketUpsertResult(stored=True, row=row)

    def _ticket_mark_submitted(self, op: TicketMarkSubmitted) -> bool:
        query = Ticket.update(
            submitted_at=op.submitted_at, submit_tx=op.submit_tx, accepted=op.accepted
        ).where(_ticket_key(op.device, op.fleet, op.epoch) & (Ticket.total_bytes == op.total_bytes))
        return bool(run_query(self._db, query))

    def _peer_seen(self, op: PeerSeen) -> PeerRow:
        stored = first_row(self._db, PeerHistory.select().where(PeerHistory.peer_id == op.peer_id))
        if stored is None:
            old = PeerRow(
                op.peer_id, op.seen_at, op.seen_at, 0, 1.0
            )  # a new peer gets the benefit of the doubt
        else:
            old = peer_row(stored)
        score = old.reliability_score
        if op.ok is not None:
            score = (1.0 - RELIABILITY_WEIGHT) * score + RELIABILITY_WEIGHT * (1.0 if op.ok else 0.0)
        row = PeerRow(
            peer_id=op.peer_id,
            first_seen=min(old.first_seen, op.seen_at),
            last_seen=max(old.last_seen, op.seen_at),
            connection_count=old.connection_count + (1 if op.connected else 0),
            reliability_score=score,
        )
        query = PeerHistory.insert(
            peer_id=row.peer_id,
            first_seen=row.first_seen,
            last_seen=row.last_seen,
            connection_count=row.connection_count,
            reliability_score=row.reliability_score,
        ).on_conflict_replace()
        run_query(self._db, query)
        return row

    def _dht_put(self, op: DhtPut) -> bool:
        stored = first_row(self._db, DhtObjectModel.select().where(DhtObjectModel.key == op.key))
        if stored is not None and stored["expires_at"] > self._clock() and op.version <= stored["version"]:
            return False
        query = DhtObjectModel.insert(
            key=op.key, value=op.value, signer=op.signer, version=op.version, expires_at=op.expires_at
        ).on_conflict_replace()
        run_query(self._db, query)
        return True


def _ticket_key(device: bytes, fleet: bytes, epoch: int) -> Any:
    return (Ticket.device == device) & (Ticket.fleet == fleet) & (Ticket.epoch == epoch)


def _ticket_values(row: TicketRow) -> dict[str, object]:
    return {
        "device": row.device,
        "fleet": row.fleet,
        "epoch": row.epoch,
        "total_bytes": row.total_bytes,
        "total_connections": row.total_connections,
        "ticket": row.ticket,
        "received_at": row.received_at,
        "submitted_at": row.submitted_at,
        "submit_tx": row.submit_tx,
        "accepted": row.accepted,
    }
