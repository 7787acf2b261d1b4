"""Channels: the control state of the node's channels (shared ports, SPEC 4 ``s``; seed: Channels).

The channels themselves are objects on the network loop (chrnode.edge.channel_hub): no byte of
theirs ever reaches an actor. Network.EdgeV2.Listener reports the hub's status here once a second
(`ChannelsReport`); this actor keeps it in a ChannelLedger (totals that survive a restart of the
network process), publishes it as snapshot part "channels" (the RPC actors answer `chr_channels`
and `network_stats.channels` from it) and reports gauges and counters to Stats (`/metrics`:
`chr_stat_channels`, `chr_stat_channel_members`, `chr_stat_channel_*_total`).
"""

from __future__ import annotations

import time
from typing import Any

from actors import messages as m
from actors.base import ChrActor
from chrnode.edge.channel_ledger import ChannelLedger


class Channels(ChrActor):
    def on_start(self, init: m.Init) -> None:
        self.ledger = ChannelLedger()
        self.counted = dict.fromkeys(self.ledger.totals(), 0)

    def on_pubsub_ready(self) -> None:
        self.publish("snapshot", "channels", self.ledger.view())

    def receiveMsg_ChannelsReport(self, msg: m.ChannelsReport, sender: Any) -> None:
        if not self.ledger.report(msg.status, time.time()):
            self.log.warning("ignored a malformed channels report from %s", msg.source)
            return
        view = self.ledger.view()
        self.stats.set_gauge("channels", float(view["channels"]))
        self.stats.set_gauge("channel_members", float(view["members"]))
        for name, total in self.ledger.totals().items():
            if total > self.counted.get(name, 0):
                self.stats.incr(f"channel_{name.removesuffix('_total')}_total", total - self.counted[name])
                self.counted[name] = total
        self.publish("snapshot", "channels", view)
