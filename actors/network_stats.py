"""Network.Stats: per-minute rollups of the node's traffic into SQLite `node_stats` (seed).

On the Cron job `stats_rollup` it asks Stats for the minute's row, writes it through
Model.Sql.Worker, prunes rows past the retention, and publishes the recent rows as snapshot
"network" for `network_stats`. On start it reloads the recent rows from SQLite.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from actors import messages as m
from actors.base import ChrActor
from actors.stats import RollupRequest, RollupRow
from chrnode.storage.ops import StatsPrune, StatsRollup

RETENTION_SECONDS = 30 * 24 * 3600
RECENT_ROWS = 60


class NetworkStats(ChrActor):
    def on_start(self, init: m.Init) -> None:
        self.recent: list[dict[str, Any]] = []
        self.pending_job: tuple[str, Any, float] | None = None
        self.loaded = False

    def on_pubsub_ready(self) -> None:
        self._publish()

    def receiveMsg_RegistryUpdate(self, msg: m.RegistryUpdate, sender: Any) -> None:
        super().receiveMsg_RegistryUpdate(msg, sender)
        if not self.loaded and self.lookup("Model.Sql.Cache") is not None:
            self.loaded = True
            self.send_to("Model.Sql.Cache", m.SqlRead("latest_node_stats", (RECENT_ROWS,), tag="load"))

    def receiveMsg_SqlReadReply(self, msg: m.SqlReadReply, sender: Any) -> None:
        if msg.tag == "load" and msg.ok:
            rows = [asdict(r) for r in msg.result]
            self.recent = sorted(rows, key=lambda r: r["timestamp"])[-RECENT_ROWS:]
            self._publish()

    def receiveMsg_RunJob(self, msg: m.RunJob, sender: Any) -> None:
        self.pending_job = (msg.name, sender, time.perf_counter())
        if not self.send_to("Stats", RollupRequest()):
            self._job_done(False, "Stats is not running")

    def receiveMsg_RollupRow(self, msg: RollupRow, sender: Any) -> None:
        self.recent = [*self.recent, asdict(msg.row)][-RECENT_ROWS:]
        self._publish()
        ops = (StatsRollup((msg.row,)), StatsPrune(int(time.time()) - RETENTION_SECONDS))
        if not self.send_to("Model.Sql.Worker", m.SqlWrite(ops, tag="rollup")):
            self._job_done(False, "Model.Sql.Worker is not running")

    def receiveMsg_SqlWritten(self, msg: m.SqlWritten, sender: Any) -> None:
        if msg.tag == "rollup":
            self._job_done(msg.ok, msg.error)

    def _job_done(self, ok: bool, error: str) -> None:
        if self.pending_job is None:
            return
        name, cron, began = self.pending_job
        self.pending_job = None
        self.send(cron, m.JobDone(name, ok, error, time.perf_counter() - began))

    def _publish(self) -> None:
        self.publish("snapshot", "network", {"node_stats": list(self.recent)})
