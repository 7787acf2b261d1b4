"""The schema and its forward-only migrations (SPEC 10).

Each migration is a version number and the SQL that brings a file from the previous version to
it. They run in order, each in its own IMMEDIATE transaction that also records the new version
under the `schema_version` key of `kv`, so a crash in the middle leaves the file at the last
complete version and the next start resumes from there. There are no down-migrations: a file
written by a newer chr-node (a version this code does not know) is refused rather than guessed at.

The seed's three tables are created exactly as the seed declares them (same names, columns and
types, nullable), with IF NOT EXISTS so a file that already has them is adopted as it is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import peewee

from chrnode.errors import StorageError
from chrnode.storage.boundary import run_sql

log = logging.getLogger("chrnode.storage")

SCHEMA_VERSION_KEY = "schema_version"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "seed tables, kv, tickets, dht_objects, cache_l2",
        (
            # The seed's tables, verbatim (seed: Data Persistence Layer).
            """CREATE TABLE IF NOT EXISTS node_stats (
                timestamp INTEGER PRIMARY KEY,
                connections INTEGER,
                bandwidth_in INTEGER,
                bandwidth_out INTEGER,
                uptime_seconds INTEGER)""",
            """CREATE TABLE IF NOT EXISTS peer_history (
                peer_id TEXT PRIMARY KEY,
                first_seen INTEGER,
                last_seen INTEGER,
                connection_count INTEGER,
                reliability_score REAL)""",
            """CREATE TABLE IF NOT EXISTS reward_tracking (
                period_start INTEGER PRIMARY KEY,
                period_end INTEGER,
                uptime_score REAL,
                performance_score REAL,
                chr_tokens_earned REAL)""",
            # What the node needs besides (SPEC 10). CHECKs repeat the writer's validation so a
            # bug elsewhere cannot store a malformed address.
            """CREATE TABLE kv (
                key TEXT PRIMARY KEY NOT NULL,
                value BLOB NOT NULL,
                updated_at REAL NOT NULL)""",
            """CREATE TABLE tickets (
                device BLOB NOT NULL CHECK (length(device) = 20),
                fleet BLOB NOT NULL CHECK (length(fleet) = 20),
                epoch INTEGER NOT NULL CHECK (epoch >= 0),
                total_bytes INTEGER NOT NULL CHECK (total_bytes >= 0),
                total_connections INTEGER NOT NULL CHECK (total_connections >= 0),
                ticket BLOB NOT NULL,
                received_at REAL NOT NULL,
                submitted_at REAL,
                submit_tx BLOB,
                accepted INTEGER,
                PRIMARY KEY (device, fleet, epoch))""",
            "CREATE INDEX tickets_epoch_submitted ON tickets (epoch, submitted_at)",
            """CREATE TABLE dht_objects (
                key BLOB PRIMARY KEY NOT NULL,
                value BLOB NOT NULL,
                signer BLOB NOT NULL,
                version INTEGER NOT NULL,
                expires_at REAL NOT NULL)""",
            "CREATE INDEX dht_objects_expires_at ON dht_objects (expires_at)",
            """CREATE TABLE cache_l2 (
                namespace TEXT NOT NULL,
                key TEXT NOT NULL,
                value BLOB NOT NULL,
                expires_at REAL NOT NULL,
                PRIMARY KEY (namespace, key))""",
            "CREATE INDEX cache_l2_expires_at ON cache_l2 (expires_at)",
        ),
    ),
)

SCHEMA_VERSION: int = MIGRATIONS[-1].version


def read_schema_version(db: peewee.SqliteDatabase) -> int:
    """The file's schema version: 0 for a file without the `kv` table (new or foreign)."""
    has_kv = run_sql(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kv'").fetchone()
    if has_kv is None:
        return 0
    row = run_sql(db, "SELECT value FROM kv WHERE key = ?", (SCHEMA_VERSION_KEY,)).fetchone()
    if row is None:
        return 0
    raw = row[0]
    try:
        return int(bytes(raw).decode("ascii") if isinstance(raw, (bytes, memoryview)) else raw)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise StorageError(
            f"the {SCHEMA_VERSION_KEY!r} entry of kv holds {raw!r}; expected an integer written by chr-node"
        ) from exc


def check_known_version(version: int, where: str) -> None:
    """Refuse a file from a newer chr-node: forward-only means we cannot read what we do not know."""
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{where}: schema version {version} is newer than this chr-node understands "
            f"(at most {SCHEMA_VERSION}); run the chr-node version that wrote it, or a newer one"
        )


def migrate(db: peewee.SqliteDatabase, where: str) -> int:
    """Bring the file up to SCHEMA_VERSION; returns the version it had before.

    Peewee/sqlite errors propagate to the caller, which converts them with the file's path.
    """
    before = read_schema_version(db)
    check_known_version(before, where)
    current = before
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        with db.atomic():
            # Re-read inside the write lock: another writer may have migrated meanwhile.
            current = read_schema_version(db)
            if migration.version <= current:
                continue
            for statement in migration.statements:
                run_sql(db, statement)
            run_sql(
                db,
                "INSERT OR REPLACE INTO kv (key, value, updated_at) VALUES (?, ?, ?)",
                (SCHEMA_VERSION_KEY, str(migration.version).encode("ascii"), time.time()),
            )
        log.info("%s: migrated schema to version %d (%s)", where, migration.version, migration.description)
        current = migration.version
    return before
