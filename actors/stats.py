"""Stats: counters, gauges and timers that every actor reports in batches (seed: Stats).

Each actor counts into its own `LocalStats` and sends a `StatsReport` once a second; this actor
merges them, publishes snapshot "stats" every second (the RPC actors read it for
`network_stats`, `/metrics` and `health`), and hands Network.Stats the per-minute rollup row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from actors import messages as m
from actors.base import ChrActor
from chrnode.stats import StatsAggregate

PUBLISH_SECONDS = 1.0


@dataclass(frozen=True)
class RollupRequest:
    pass


@dataclass(frozen=True)
class RollupRow:
    row: Any  # chrnode.storage.rows.NodeStatsRow


class Stats(ChrActor):
    def on_start(self, init: m.Init) -> None:
        self.aggregate = StatsAggregate(started_at=time.time())
        self.changed = True
        self.wakeupAfter(PUBLISH_SECONDS, payload="publish")

    def receiveMsg_StatsReport(self, msg: m.StatsReport, sender: Any) -> None:
        self.aggregate.merge(msg.batch)
        self.changed = True

    def receiveMsg_ChildState(self, msg: m.ChildState, sender: Any) -> None:
        if msg.state != "running":
            self.aggregate.forget(msg.name)

    def receiveMsg_RollupRequest(self, msg: RollupRequest, sender: Any) -> None:
        self.send(sender, RollupRow(self.aggregate.minute_rollup(time.time())))

    def on_timer(self, payload: Any) -> None:
        if payload != "publish":
            return
        if self.changed:
            self.publish("snapshot", "stats", self.aggregate.snapshot(time.time()))
            self.changed = False
        self.wakeupAfter(PUBLISH_SECONDS, payload="publish")
