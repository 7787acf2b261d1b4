"""Model.Sql: the single SQLite writer (Worker) and the read side (Cache), under their supervisor.

All writes of the node go through `Model.Sql.Worker` as `SqlWrite` batches, each one transaction
with synchronous=FULL, answered `SqlWritten` only after the commit (SPEC 10: nothing acknowledged
is lost to a SIGKILL). `Model.Sql.Cache` answers `SqlRead` from a read-only connection, so slow
reads never hold up writes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from actors import messages as m
from actors.base import ChrActor
from chrnode.errors import StorageError
from chrnode.storage.db import database_path, open_database
from chrnode.storage.ops import CachePurgeExpired, DhtPurgeExpired
from chrnode.storage.reader import Reader
from chrnode.storage.writer import Writer


class SqlWorker(ChrActor):
    def on_start(self, init: m.Init) -> None:
        self.path = database_path(Path(self.config.data_dir))
        self.db = open_database(self.path)
        self.writer = Writer(self.db)
        self.health: dict[str, Any] = {
            "ok": True,
            "path": str(self.path),
            "writes": 0,
            "errors": 0,
            "last_error": "",
            "last_write_at": None,
        }

    def on_stop(self) -> None:
        self.db.shutdown()

    def on_pubsub_ready(self) -> None:
        self._publish()

    def receiveMsg_SqlWrite(self, msg: m.SqlWrite, sender: Any) -> None:
        started = time.perf_counter()
        try:
            results = self.writer.apply(list(msg.ops))
        except StorageError as exc:
            self.health.update(ok=False, last_error=str(exc), errors=self.health["errors"] + 1)
            self.stats.incr("errors_total", labels={"category": "storage"})
            self.log.error("write failed: %s", exc)
            self.send(sender, m.SqlWritten(msg.tag, False, (), str(exc)))
            self._publish()
            return
        self.stats.record("sql_write_seconds", time.perf_counter() - started)
        self.health.update(ok=True, writes=self.health["writes"] + 1, last_write_at=time.time())
        self.send(sender, m.SqlWritten(msg.tag, True, tuple(results)))

    def receiveMsg_RunJob(self, msg: m.RunJob, sender: Any) -> None:
        started = time.perf_counter()
        try:
            now = time.time()
            self.writer.apply([CachePurgeExpired(now), DhtPurgeExpired(now)])
            size = os.path.getsize(self.path)
            self.health.update(ok=True, size_bytes=size)
            ok, error = True, ""
        except (StorageError, OSError) as exc:
            self.health.update(ok=False, last_error=str(exc))
            ok, error = False, str(exc)
        self._publish()
        self.send(sender, m.JobDone(msg.name, ok, error, time.perf_counter() - started))

    def _publish(self) -> None:
        # The shape health.storage_layer reads: writable, error, checked_at (+ details).
        report = dict(self.health)
        report.update(writable=self.health["ok"], error=self.health["last_error"], checked_at=time.time())
        self.publish("snapshot", "storage", report)


class SqlCache(ChrActor):
    """Reads, on a read-only connection of its own."""

    def on_start(self, init: m.Init) -> None:
        self.db = open_database(database_path(Path(self.config.data_dir)), readonly=True)
        self.reader = Reader(self.db)

    def on_stop(self) -> None:
        self.db.shutdown()

    def receiveMsg_SqlRead(self, msg: m.SqlRead, sender: Any) -> None:
        query = getattr(self.reader, msg.query, None)
        if query is None or msg.query.startswith("_"):
            self.send(sender, m.SqlReadReply(msg.tag, False, None, f"unknown query {msg.query!r}"))
            return
        try:
            result = query(*msg.args)
        except (StorageError, TypeError, ValueError) as exc:
            self.send(sender, m.SqlReadReply(msg.tag, False, None, str(exc)))
            return
        self.send(sender, m.SqlReadReply(msg.tag, True, result))
