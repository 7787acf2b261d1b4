"""Opening the node's SQLite file (SPEC 10): one writer, any number of read-only readers.

The writer (the Model.Sql actor's process) opens the file with WAL journaling, so readers in other
processes keep reading the last committed state while it writes, and with `synchronous=FULL`, so
a commit it acknowledged survives SIGKILL of the process and also a power cut. A lock file
(`<file>.writer.lock`, flock) makes "one writer" a guarantee rather than a convention: a second
node started on the same data dir is refused with a clear message instead of interleaving writes.

Readers open the file through a `mode=ro` URI with `query_only`, so a bug in a reader cannot write.

Every peewee/sqlite error is converted here into `StorageError` naming the file and the reason.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import peewee

from chrnode.errors import StorageError
from chrnode.storage.boundary import converting
from chrnode.storage.schema import check_known_version, migrate, read_schema_version

log = logging.getLogger("chrnode.storage")

DB_FILENAME = "chr-node.sqlite"
"""Name of the database file inside the data dir."""

DEFAULT_BUSY_TIMEOUT_S = 5.0
DEFAULT_LOCK_TIMEOUT_S = 5.0
_LOCK_POLL_S = 0.02


def database_path(data_dir: Path) -> Path:
    """Where the node's database lives inside a data dir."""
    return Path(data_dir) / DB_FILENAME


class _WriterLock:
    """An exclusive flock on `<db>.writer.lock`, held for as long as the writer is open.

    The kernel drops it when the process dies, so a SIGKILLed writer never leaves a stale lock.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, db_path: Path, timeout_s: float) -> _WriterLock:
        lock_path = db_path.with_name(db_path.name + ".writer.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(
                f"SQLite database {db_path}: cannot create the writer lock file {lock_path}: {exc.strerror}; "
                "expected a data directory this user can write to"
            ) from exc
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    raise StorageError(
                        f"SQLite database {db_path}: locked by another writer ({holder}) for more than "
                        f"{timeout_s:g} s; only one chr-node process may write a data dir at a time"
                    ) from exc
                # A restarted writer may race the old process's exit: wait for the kernel to free it.
                time.sleep(_LOCK_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return cls(fd, lock_path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text else "unknown process"


class NodeDatabase(peewee.SqliteDatabase):
    """A SqliteDatabase that knows its file, whether it is read-only, and owns the writer lock."""

    def __init__(
        self,
        database: str,
        *,
        path: Path,
        readonly: bool,
        writer_lock: _WriterLock | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(database, **kwargs)
        self.path = path
        self.readonly = readonly
        self._writer_lock = writer_lock
        self._shut_down = False

    def _connect(self) -> Any:
        # peewee reconnects on demand; after shutdown() that would write without the writer lock.
        if self._shut_down:
            raise StorageError(f"SQLite database {self.path}: used after shutdown(); open it again")
        return super()._connect()  # type: ignore[misc]  # not in the stubs

    def shutdown(self) -> None:
        """Close this thread's connection and give up the writer lock. Safe to call twice."""
        self._shut_down = True
        try:
            if not self.is_closed():
                with converting(self.path, "closing"):
                    self.close()
        finally:
            if self._writer_lock is not None:
                self._writer_lock.release()
                self._writer_lock = None


def open_database(
    path: Path,
    *,
    readonly: bool = False,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> NodeDatabase:
    """Open the node's database file; raises StorageError with the path and reason on any fault.

    The writer creates the directory and the file if missing and migrates the schema to the
    current version. A reader needs an existing file with a schema this code knows.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise StorageError(
            f"SQLite database {path}: exists but is not a regular file; expected an SQLite file"
        )
    if readonly:
        return _open_reader(path, busy_timeout_s)
    return _open_writer(path, busy_timeout_s, lock_timeout_s)


def _open_writer(path: Path, busy_timeout_s: float, lock_timeout_s: float) -> NodeDatabase:
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise StorageError(
                    f"SQLite database {path}: {parent} is a file, not a directory; "
                    "expected a data directory this user can write to"
                )
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"SQLite database {path}: cannot create its directory {path.parent}: {exc.strerror}; "
            "expected a data directory this user can write to"
        ) from exc
    lock = _WriterLock.acquire(path, lock_timeout_s)
    pragmas = [
        ("journal_mode", "wal"),
        # FULL, not NORMAL: in WAL mode NORMAL fsyncs only at checkpoints, so a commit sits in the
        # OS page cache until then. That survives SIGKILL of this process (the kernel still has
        # the write) but not a power cut, kernel panic or VM/container host kill, and an
        # acknowledged ticket is money (SPEC 5, SPEC 10). FULL fsyncs the WAL at every commit; the
        # writer batches many ops into one transaction, so the cost is one fsync per batch.
        ("synchronous", "full"),
        ("foreign_keys", 1),
        ("busy_timeout", int(busy_timeout_s * 1000)),
        ("journal_size_limit", 64 * 1024 * 1024),
    ]
    db = NodeDatabase(
        str(path),
        path=path,
        readonly=False,
        writer_lock=lock,
        pragmas=pragmas,
        timeout=busy_timeout_s,
        # The single writer takes the write lock at BEGIN, so a batch never fails half-way for
        # want of the lock after having done its reads.
        lock_type="IMMEDIATE",
    )
    try:
        with converting(path, "opening for writing"):
            db.connect()
            mode = str(db.journal_mode).lower()
            if mode != "wal":
                raise StorageError(
                    f"SQLite database {path}: could not switch to WAL journaling (got {mode!r}); "
                    "expected a local filesystem that supports WAL"
                )
            migrate(db, str(path))
    except BaseException:
        db.shutdown()
        raise
    log.info("opened %s for writing (WAL, synchronous=FULL)", path)
    return db


def _open_reader(path: Path, busy_timeout_s: float) -> NodeDatabase:
    if not path.is_file():
        raise StorageError(
            f"SQLite database {path}: no such file; readers open the file the writer creates, "
            "so the node's storage actor must have started once"
        )
    uri = "file:" + quote(str(path.resolve())) + "?mode=ro"
    pragmas = [("query_only", 1), ("foreign_keys", 1), ("busy_timeout", int(busy_timeout_s * 1000))]
    db = NodeDatabase(uri, path=path, readonly=True, pragmas=pragmas, timeout=busy_timeout_s, uri=True)
    try:
        with converting(path, "opening read-only"):
            db.connect()
            version = read_schema_version(db)
        if version == 0:
            raise StorageError(
                f"SQLite database {path}: has no chr-node schema yet; "
                "the writer creates it when it first opens the file"
            )
        check_known_version(version, f"SQLite database {path}")
    except BaseException:
        db.shutdown()
        raise
    return db
