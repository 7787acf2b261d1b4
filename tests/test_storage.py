"""Opening the SQLite file: WAL, pragmas, the seed's tables, migrations, and every open failure as
a StorageError with the path and a clear reason (SPEC 10). Real files in tmp_path."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from chrnode.errors import StorageError
from chrnode.storage import KvSet, NodeDatabase, Reader, Writer, database_path, open_database
from chrnode.storage.boundary import run_sql
from chrnode.storage.models import ALL_MODELS
from chrnode.storage.schema import MIGRATIONS, SCHEMA_VERSION, SCHEMA_VERSION_KEY

SEED_TABLES = {
    "node_stats": [
        ("timestamp", "INTEGER", 1),
        ("connections", "INTEGER", 0),
        ("bandwidth_in", "INTEGER", 0),
        ("bandwidth_out", "INTEGER", 0),
        ("uptime_seconds", "INTEGER", 0),
    ],
    "peer_history": [
        ("peer_id", "TEXT", 1),
        ("first_seen", "INTEGER", 0),
        ("last_seen", "INTEGER", 0),
        ("connection_count", "INTEGER", 0),
        ("reliability_score", "REAL", 0),
    ],
    "reward_tracking": [
        ("period_start", "INTEGER", 1),
        ("period_end", "INTEGER", 0),
        ("uptime_score", "REAL", 0),
        ("performance_score", "REAL", 0),
        ("chr_tokens_earned", "REAL", 0),
    ],
}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return database_path(tmp_path / "data")


@pytest.fixture
def writer_db(db_path: Path) -> Iterator[NodeDatabase]:
    db = open_database(db_path)
    yield db
    db.shutdown()


def columns(db: NodeDatabase, table: str) -> list[tuple[str, str, int]]:
    rows = run_sql(db, f"PRAGMA table_info({table})").fetchall()
    return [(name, type_, pk) for _cid, name, type_, _notnull, _default, pk in rows]


def test_writer_uses_wal_full_sync_foreign_keys_and_busy_timeout(
    writer_db: NodeDatabase, db_path: Path
) -> None:
    assert run_sql(writer_db, "PRAGMA journal_mode").fetchone()[0] == "wal"
    assert run_sql(writer_db, "PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert run_sql(writer_db, "PRAGMA foreign_keys").fetchone()[0] == 1
    assert run_sql(writer_db, "PRAGMA busy_timeout").fetchone()[0] == 5000
    Writer(writer_db).apply([KvSet("a", b"1")])
    assert db_path.with_name(db_path.name + "-wal").exists()
    # WAL is a property of the file: a plain sqlite3 connection sees it too.
    with sqlite3.connect(db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_seed_tables_have_the_seeds_columns_exactly(writer_db: NodeDatabase) -> None:
    for table, expected in SEED_TABLES.items():
        assert columns(writer_db, table) == expected, table


def test_node_tables_exist_with_their_keys(writer_db: NodeDatabase) -> None:
    tables = {
        row[0] for row in run_sql(writer_db, "SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    }
    assert {
        "node_stats",
        "peer_history",
        "reward_tracking",
        "kv",
        "tickets",
        "dht_objects",
        "cache_l2",
    } <= tables
    pk = {
        table: [c[0] for c in sorted(columns(writer_db, table), key=lambda c: c[2]) if c[2]]
        for table in tables
    }
    assert pk["tickets"] == ["device", "fleet", "epoch"]
    assert pk["cache_l2"] == ["namespace", "key"]
    assert pk["dht_objects"] == ["key"]
    assert pk["kv"] == ["key"]


def test_models_agree_with_the_migrated_schema(writer_db: NodeDatabase) -> None:
    for model in ALL_MODELS:
        table = model._meta.table_name
        in_file = {name: type_ for name, type_, _pk in columns(writer_db, table)}
        in_model = {f.column_name: f.field_type for f in model._meta.sorted_fields}
        # peewee's generic types (INT, BOOL, FLOAT) as the SQLite types it would declare.
        affinity = {"INT": "INTEGER", "FLOAT": "REAL", **writer_db.field_types}
        in_model = {k: affinity.get(v, v) for k, v in in_model.items()}
        assert in_file == in_model, table


def test_schema_version_is_recorded_and_reopening_does_not_migrate_again(db_path: Path) -> None:
    db = open_database(db_path)
    Writer(db).apply([KvSet("kept", b"yes")])
    assert Reader(db).schema_version() == SCHEMA_VERSION == MIGRATIONS[-1].version
    db.shutdown()
    db = open_database(db_path)
    try:
        assert Reader(db).schema_version() == SCHEMA_VERSION
        assert Reader(db).kv_get("kept") == b"yes"
    finally:
        db.shutdown()


def test_a_file_with_only_the_seeds_tables_is_adopted_with_its_rows(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as raw:
        raw.execute(
            "CREATE TABLE node_stats (timestamp INTEGER PRIMARY KEY, connections INTEGER, "
            "bandwidth_in INTEGER, bandwidth_out INTEGER, uptime_seconds INTEGER)"
        )
        raw.execute("INSERT INTO node_stats VALUES (60, 3, 100, 200, 60)")
    raw.close()
    db = open_database(db_path)
    try:
        rows = Reader(db).latest_node_stats()
        assert [(r.timestamp, r.connections, r.bandwidth_in) for r in rows] == [(60, 3, 100)]
        assert Reader(db).schema_version() == SCHEMA_VERSION
    finally:
        db.shutdown()


def test_a_file_from_a_newer_chr_node_is_refused(db_path: Path) -> None:
    open_database(db_path).shutdown()
    with sqlite3.connect(db_path) as raw:
        raw.execute(
            "UPDATE kv SET value = ? WHERE key = ?", (str(SCHEMA_VERSION + 1).encode(), SCHEMA_VERSION_KEY)
        )
    raw.close()
    for readonly in (False, True):
        with pytest.raises(StorageError, match=rf"schema version {SCHEMA_VERSION + 1} is newer"):
            open_database(db_path, readonly=readonly)


def test_a_garbage_schema_version_is_a_clear_error(db_path: Path) -> None:
    open_database(db_path).shutdown()
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE kv SET value = ? WHERE key = ?", (b"abc", SCHEMA_VERSION_KEY))
    raw.close()
    with pytest.raises(StorageError, match=r"schema_version.*expected an integer"):
        open_database(db_path)


def test_writer_creates_missing_data_dir(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "node.sqlite"
    db = open_database(path)
    db.shutdown()
    assert path.is_file()


def test_unwritable_directory_parent_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"x")
    with pytest.raises(
        StorageError, match=r"not-a-dir is a file, not a directory; expected a data directory"
    ):
        open_database(blocker / "node.sqlite")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_permissions(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(StorageError, match=r"ro.*(writer lock file|cannot be opened).*write"):
            open_database(locked / "node.sqlite")
    finally:
        locked.chmod(0o700)


def test_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a regular file"):
        open_database(tmp_path)


def test_garbage_file_is_reported_as_corrupt(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not sqlite at all" * 400)
    for readonly in (False, True):
        with pytest.raises(StorageError) as info:
            open_database(db_path, readonly=readonly)
        assert str(db_path) in str(info.value)
        assert "corrupt or is not an SQLite database" in str(info.value)
    assert db_path.read_bytes().startswith(b"this is not sqlite")  # nothing was overwritten


def test_damaged_pages_give_storage_error_not_sqlite_error(db_path: Path) -> None:
    db = open_database(db_path)
    Writer(db).apply([KvSet(f"key{i}", os.urandom(300)) for i in range(200)])
    db.shutdown()
    data = bytearray(db_path.read_bytes())
    assert len(data) > 8192
    data[4096:] = b"\xa5" * (len(data) - 4096)  # keep the header page, smash every other page
    db_path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=r"corrupt|malformed"):
        db = open_database(db_path, readonly=True)
        try:
            for i in range(200):
                Reader(db).kv_get(f"key{i}")
        finally:
            db.shutdown()


def test_reader_needs_an_existing_file(db_path: Path) -> None:
    with pytest.raises(StorageError, match=r"no such file.*started once"):
        open_database(db_path, readonly=True)
    assert not db_path.exists()  # a reader never creates the file


def test_reader_refuses_a_file_without_schema(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    sqlite3.connect(db_path).close()
    with pytest.raises(StorageError, match="no chr-node schema yet"):
        open_database(db_path, readonly=True)


def test_reader_cannot_write(writer_db: NodeDatabase, db_path: Path) -> None:
    reader_db = open_database(db_path, readonly=True)
    try:
        assert reader_db.readonly
        with pytest.raises(peewee.OperationalError, match="readonly"):
            run_sql(reader_db, "INSERT INTO kv VALUES ('x', x'00', 0)")
        with pytest.raises(StorageError, match="opened for writing"):
            Writer(reader_db)
    finally:
        reader_db.shutdown()


def test_second_writer_is_refused_while_the_first_is_open(writer_db: NodeDatabase, db_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"locked by another writer \(pid {os.getpid()}\).*only one"):
        open_database(db_path, lock_timeout_s=0.05)
    writer_db.shutdown()
    open_database(db_path, lock_timeout_s=0.05).shutdown()  # free again once the first is closed


def test_sqlite_busy_becomes_a_locked_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite"
    db = open_database(path, busy_timeout_s=0.05)
    other = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    try:
        other.execute("BEGIN IMMEDIATE")  # a foreign process holding the write lock
        with pytest.raises(StorageError, match=r"busy\.sqlite.*database is locked"):
            Writer(db).apply([KvSet("a", b"1")])
        other.execute("ROLLBACK")
        Writer(db).apply([KvSet("a", b"1")])  # usable again
        assert Reader(db).kv_get("a") == b"1"
    finally:
        other.close()
        db.shutdown()


def test_path_with_uri_special_characters(tmp_path: Path) -> None:
    path = tmp_path / "we?ird #dir%20" / "node.sqlite"
    db = open_database(path)
    try:
        Writer(db).apply([KvSet("a", b"1")])
        ro = open_database(path, readonly=True)
        try:
            assert Reader(ro).kv_get("a") == b"1"
        finally:
            ro.shutdown()
    finally:
        db.shutdown()


def test_a_database_cannot_be_used_after_shutdown(db_path: Path) -> None:
    db = open_database(db_path)
    db.shutdown()
    db.shutdown()  # twice is fine
    with pytest.raises(StorageError, match="used after shutdown"):
        Writer(db).apply([KvSet("a", b"1")])
    with pytest.raises(StorageError, match="used after shutdown"):
        Reader(db).kv_get("a")
