"""RemoteChain: the seed's RemoteChain.Supervisor children (SPEC 7), three thin actors, one module
each; this one holds the Cache and names all three for actors.tree.

    RemoteChain.RPC      actors/chain_submit.py: RemoteRpc, uncached: raw reads (EthRequest) and
                         ticket submission (SubmitTickets, Cron job "ticket_submit")
    RemoteChain.Monitor  actors/chain_monitor.py: probes every endpoint, follows the Fleet and BNS
                         events, publishes snapshot "chain", sends CacheInvalidate here
    RemoteChain.Cache    here: TieredCache + ChainService: BNS, fleet and payment checks, proxied
                         eth_* reads; drops what CacheInvalidate names; publishes snapshots "cache"
                         and "fleet_chain" (the node's standing in its fleet) and cache counters

Chain and HTTP work never runs on an actor's own thread (actors/chain_pool.py). The chain may be
absent (no anvil, no contracts.json): the actors start anyway, report "down" / "not configured"
with the reason, and lookups fail at once (no endpoint: connection refused; no contract address:
ChainNotConfigured, no traffic). Messages are in actors/chain_messages.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from actors import chain_messages as cm
from actors import messages as m
from actors.chain_monitor import RemoteChainMonitor
from actors.chain_pool import PoolActor, chain_rpc, open_reader
from actors.chain_submit import RemoteChainRpc
from chrnode.chain.cache import TieredCache
from chrnode.chain.cache_l2 import ReaderStore
from chrnode.chain.payments import ChainPaymentCheck, PaymentLedger
from chrnode.chain.service import ChainContracts, ChainFleetCheck, ChainService
from chrnode.errors import ChrError
from chrnode.identity import load_or_create_node_key
from chrnode.storage.ops import CacheDelete, CachePut

__all__ = ["RemoteChainCache", "RemoteChainMonitor", "RemoteChainRpc"]  # actors.tree names all three here

PUBLISH_SECONDS = 2.0
FLUSH_SECONDS = 0.2
FLEET_SECONDS = 30.0  # the "stats" TTL: fleet standing is read through the cache anyway


class RemoteChainCache(PoolActor):
    def on_start(self, init: m.Init) -> None:
        cfg = self.config
        self._start_pool(cfg.worker_pool_size)
        self.db, reader, self.l2_problem = open_reader(cfg)
        store = None if reader is None else ReaderStore(reader, self._queue_write)
        if reader is None:
            self.log.warning("L2 cache off: %s", self.l2_problem)
        self.follower = rpc = chain_rpc(cfg)
        wait = len(cfg.chain_rpc) * cfg.chain_timeout + 10.0
        self.cache = TieredCache(
            cfg.cache_size,
            store,
            executor=self.pool,
            wait_timeout=wait,
            l2_trusted_from={"contracts": time.time()},
        )
        self.contracts = ChainContracts.from_config(cfg)
        self.service = ChainService(rpc, self.contracts, self.cache)
        self.fleet_check = ChainFleetCheck(self.service)
        self.payments = ChainPaymentCheck(self.service, PaymentLedger(store))
        self.writes: list[CachePut | CacheDelete] = []
        self.flush_due = False
        self.reported: dict[tuple[str, str], int] = {}
        try:
            self.node_address: bytes | None = load_or_create_node_key(Path(cfg.node_key_path)).address
        except (ChrError, OSError) as exc:
            self.node_address = None
            self.log.warning("no node key, so no fleet standing to report: %s", exc)
        self.fleet_due = 0.0
        self.wakeupAfter(PUBLISH_SECONDS, payload="publish")

    def on_stop(self) -> None:
        super().on_stop()
        self._flush()
        if self.db is not None:
            self.db.shutdown()

    def on_pubsub_ready(self) -> None:
        self._publish()

    # -- requests -----------------------------------------------------------------------------

    def receiveMsg_BnsResolve(self, msg: cm.BnsResolve, sender: Any) -> None:
        self.run(sender, msg.tag, lambda: self.service.bns_resolve(msg.name))

    def _unconfigured(self, sender: Any, tag: Any) -> bool:
        """Without the node's contracts (no chain for this node) fleet and payment rules cannot
        apply: say so, and the edge port relays without them (development, SPEC 5 steps 4, 6)."""
        if self.contracts.configured:
            return False
        self.send(
            sender,
            cm.ChainAnswer(
                tag,
                False,
                None,
                cm.NOT_CONFIGURED,
                f"the chain contracts are not configured: {self.contracts.problem}",
            ),
        )
        return True

    def receiveMsg_FleetCheckRequest(self, msg: cm.FleetCheckRequest, sender: Any) -> None:
        if self._unconfigured(sender, msg.tag):
            return

        def work() -> tuple[bool, bool]:
            node_ok = self.fleet_check.node_allowed(msg.fleet, msg.node)
            return node_ok, self.fleet_check.device_allowed(msg.fleet, msg.device)

        self.run(sender, msg.tag, work)

    def receiveMsg_PaymentCheckRequest(self, msg: cm.PaymentCheckRequest, sender: Any) -> None:
        if self._unconfigured(sender, msg.tag):
            return
        self.run(sender, msg.tag, lambda: self.payments.check_payment(msg.ticket, msg.device))

    def receiveMsg_FleetStatusRequest(self, msg: cm.FleetStatusRequest, sender: Any) -> None:
        self.run(sender, msg.tag, lambda: self.service.fleet_status(msg.node, msg.fleet))

    def receiveMsg_EthRequest(self, msg: cm.EthRequest, sender: Any) -> None:
        self.run(sender, msg.tag, lambda: self.service.proxy_fetch(msg.method, list(msg.params)))

    def receiveMsg_CacheInvalidate(self, msg: cm.CacheInvalidate, sender: Any) -> None:
        """The chain changed these reads (RemoteChain.Monitor saw the events): drop them now."""
        if msg.everything:
            dropped = self.cache.invalidate_category(msg.category)
        else:
            for key in msg.keys:
                self.cache.invalidate(msg.category, key)
            dropped = len(msg.keys)
        self.log.debug("dropped %d cached %s read(s): %s", dropped, msg.category, msg.reason)

    # -- L2 writes go to the single writer, batched ---------------------------------------------

    def _queue_write(self, op: CachePut | CacheDelete) -> None:  # from pool threads
        self.post(self.name, cm.L2Write(op))

    def receiveMsg_L2Write(self, msg: cm.L2Write, sender: Any) -> None:
        self.writes.append(msg.op)
        if not self.flush_due:
            self.flush_due = True
            self.wakeupAfter(FLUSH_SECONDS, payload="flush")

    def receiveMsg_FleetStanding(self, msg: cm.FleetStanding, sender: Any) -> None:
        self.publish("snapshot", "fleet_chain", msg.status)

    def _flush(self) -> None:
        self.flush_due = False
        writes, self.writes = self.writes, []
        if writes and not self.send_to("Model.Sql.Worker", m.SqlWrite(tuple(writes), tag="cache-l2")):
            self.log.debug("Model.Sql.Worker is not running: %d L2 cache writes dropped", len(writes))

    def receiveMsg_SqlWritten(self, msg: m.SqlWritten, sender: Any) -> None:
        if not msg.ok:
            self.log.warning("L2 cache write failed: %s", msg.error)

    # -- reporting ------------------------------------------------------------------------------

    def on_timer(self, payload: Any) -> None:
        if payload == "flush":
            self._flush()
        elif payload == "publish":
            self._publish()
            self.wakeupAfter(PUBLISH_SECONDS, payload="publish")
            if time.monotonic() >= self.fleet_due:
                self.fleet_due = time.monotonic() + FLEET_SECONDS
                self._report_fleet()

    def _report_fleet(self) -> None:
        """The node's standing in its configured fleet, as snapshot "fleet_chain" (`fleet_status`)."""
        node = self.node_address
        if node is None:
            return

        def work() -> None:
            status: dict[str, Any] = {"configured": self.contracts.fleet is not None}
            status["checked_at"] = time.time()
            try:
                status.update(self.service.fleet_status(node), ok=True)
            except ChrError as exc:
                status.update(ok=False, code=cm.error_code(exc), error=str(exc))
            self.post(self.name, cm.FleetStanding(status))

        self.pool.submit(work)

    def _publish(self) -> None:
        stats = self.cache.stats()
        # Counters for chrnode.metrics: cache_hits_total / cache_misses_total{cache} -> hit ratios.
        totals = {
            ("chain_l1", "hits"): stats["hits"]["l1"],
            ("chain_l1", "misses"): stats["requests"] - stats["hits"]["l1"],
            ("chain_l2", "hits"): stats["hits"]["l2"],
            ("chain_l2", "misses"): stats["hits"]["chain"],
            ("chain", "hits"): stats["hits"]["l1"] + stats["hits"]["l2"] + stats["merged"],
            ("chain", "misses"): stats["hits"]["chain"],
        }
        for (cache, result), total in totals.items():
            delta = total - self.reported.get((cache, result), 0)
            if delta > 0:
                self.stats.incr(f"cache_{result}_total", delta, labels={"cache": cache})
            self.reported[(cache, result)] = total
        stats["l2"] = "on" if self.cache.store is not None else f"off: {self.l2_problem}"
        stats["contracts"] = self.contracts.as_json()
        stats["configured"] = self.contracts.configured
        self.publish("snapshot", "cache", stats)
