"""Storage (SPEC 10): the node's SQLite file through peewee, WAL, one writer, read-only readers.

open_database(path, readonly=...)  -> NodeDatabase       (db.py)
Writer(db).apply([op, ...])        -> [result, ...]      one transaction per batch (writer.py)
Reader(db).best_ticket(...) ...                          queries (reader.py)
KvSet, TicketUpsert, ...                                 picklable write ops (ops.py)
TicketRow, PeerRow, ...                                  picklable rows (rows.py)
MIGRATIONS, SCHEMA_VERSION                               forward-only schema (schema.py)
"""

from chrnode.storage.db import DB_FILENAME, NodeDatabase, database_path, open_database
from chrnode.storage.ops import (
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
from chrnode.storage.reader import Reader
from chrnode.storage.rows import DhtObject, NodeStatsRow, PeerRow, RewardRow, TicketRow, TicketUpsertResult
from chrnode.storage.schema import SCHEMA_VERSION
from chrnode.storage.writer import Writer, WriteResult

__all__ = [
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "CacheDelete",
    "CachePurgeExpired",
    "CachePut",
    "DhtObject",
    "DhtPurgeExpired",
    "DhtPut",
    "KvDelete",
    "KvSet",
    "NodeDatabase",
    "NodeStatsRow",
    "PeerRow",
    "PeerSeen",
    "Reader",
    "RewardPeriod",
    "RewardRow",
    "StatsPrune",
    "StatsRollup",
    "TicketMarkSubmitted",
    "TicketRow",
    "TicketUpsert",
    "TicketUpsertResult",
    "WriteOp",
    "WriteResult",
    "Writer",
    "database_path",
    "open_database",
]
