"""RemoteChain: the seed's RemoteChain.Supervisor children (SPEC 7), three thin actors.

    RemoteChain.RPC      RemoteRpc, uncached: raw reads (EthRequest) and ticket submission
                         (SubmitTickets, Cron job "ticket_submit" which it registers itself)
    RemoteChain.Monitor  polls every endpoint's head block, publishes snapshot "chain"
    RemoteChain.Cache    TieredCache + ChainService: BNS, fleet and payment checks, proxied eth_*
                         reads; publishes snapshots "cache" and "fleet_chain" (the node's standing
                         in its fleet) and cache hit/miss counters for metrics

Chain and HTTP work never runs on an actor's own thread: it goes to a thread pool of
`worker_pool_size` threads and the answer comes back through the ThreadBridge, so every actor
keeps answering while endpoints time out. The chain may be absent (no anvil, no contracts.json):
the actors start anyway, report "down" / "not configured" with the reason, and lookups fail at
once (no endpoint: connection refused; no contract address: ChainNotConfigured, no traffic).
Messages are in actors/chain_messages.py.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from actors import chain_messages as cm
from actors import messages as m
from actors.base import ChrActor
from chrnode.chain import hexcodec as hx
from chrnode.chain.cache import Hit, ReaderStore, TieredCache
from chrnode.chain.contracts import TicketRegistry
from chrnode.chain.monitor import HeadMonitor
from chrnode.chain.payments import ChainPaymentCheck, PaymentLedger
from chrnode.chain.rpc import RemoteRpc
from chrnode.chain.service import PROXIED_METHODS, ChainContracts, ChainFleetCheck, ChainService
from chrnode.chain.submitter import TicketSubmitter, mark_ops, ticket_of_row
from chrnode.chain.tx import KeySigner
from chrnode.errors import ChrError, StorageError
from chrnode.identity import load_or_create_node_key
from chrnode.storage.db import NodeDatabase, database_path, open_database
from chrnode.storage.ops import CachePut
from chrnode.storage.reader import Reader
from chrnode.ticket import epoch_of

POLL_SECONDS = 2.0
PUBLISH_SECONDS = 2.0
FLUSH_SECONDS = 0.2
FLEET_SECONDS = 30.0  # the "stats" TTL: fleet standing is read through the cache anyway
MAX_QUEUED_PER_THREAD = 64  # beyond pool size x this, requests are refused `busy`, not queued
SUBMIT_JOB = "ticket_submit"
SUBMIT_INTERVAL = 3600.0
SUBMIT_LIMIT = 4 * TicketRegistry.MAX_BATCH
RAW_METHODS = (
    *PROXIED_METHODS,
    "eth_getBlockByNumber",
    "eth_getTransactionByHash",
    "eth_gasPrice",
    "net_version",
)


class _PoolActor(ChrActor):
    """Blocking work in a thread pool; answers posted back through the bridge and sent from here."""

    def _start_pool(self, threads: int) -> None:
        self.start_bridge()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix=f"chain-{self.name}")
        self.max_queued = threads * MAX_QUEUED_PER_THREAD
        self.queued = 0
        self._post_lock = threading.Lock()
        self._stopped = False

    def post(self, target: str, message: Any, **extra: Any) -> None:
        """From a pool thread: hand `message` to this actor's thread (dropped once stopping)."""
        with self._post_lock:
            if not self._stopped and self.bridge is not None:
                self.bridge.post(target, message, **extra)

    def run(self, sender: Any, tag: Any, work: Callable[[], Any]) -> None:
        if self.queued >= self.max_queued:
            busy = f"{self.name} has {self.queued} chain requests queued; retry later"
            self.send(sender, cm.ChainAnswer(tag, False, None, cm.BUSY, busy))
            return
        self.queued += 1

        def job() -> None:
            try:
                result = work()
            except ChrError as exc:
                answer = cm.error_answer(tag, exc)
            except Exception as exc:  # a bug: answer anyway, so the caller is not left waiting
                self.log.exception("%s: request failed", self.name)
                answer = cm.error_answer(tag, exc)
            else:
                if isinstance(result, Hit):
                    answer = cm.ChainAnswer(tag, True, result.value, stale=result.stale)
                else:
                    answer = cm.ChainAnswer(tag, True, result, stale=bool(getattr(result, "stale", False)))
            self.post("__self__", answer, reply_to=sender)

        self.pool.submit(job)

    def on_bridge(self, message: Any, extra: dict[str, Any]) -> None:
        if isinstance(message, cm.ChainAnswer):
            self.queued -= 1
            self.send(extra["reply_to"], message)

    def on_stop(self) -> None:
        with self._post_lock:
            self._stopped = True
        # Running calls end within their RemoteRpc timeout; nothing waits for them here.
        self.pool.shutdown(wait=False, cancel_futures=True)


def _rpc(config: Any) -> RemoteRpc:
    return RemoteRpc(config.chain_rpc, config.chain_id, timeout=config.chain_timeout)


def _open_reader(config: Any) -> tuple[NodeDatabase | None, Reader | None, str]:
    try:
        db = open_database(database_path(Path(config.data_dir)), readonly=True)
    except StorageError as exc:
        return None, None, str(exc)
    return db, Reader(db), ""


class RemoteChainRpc(_PoolActor):
    def on_start(self, init: m.Init) -> None:
        cfg = self.config
        self._start_pool(cfg.worker_pool_size)
        self.rpc = _rpc(cfg)
        self.contracts = ChainContracts.from_config(cfg)
        self.db: NodeDatabase | None = None
        self.reader: Reader | None = None
        self.reader_lock = threading.Lock()
        self.cron_registered: Any = None  # the Cron address the submit job was registered with
        self.jobs: dict[str, tuple[Any, float]] = {}  # tag -> (cron address, started)

    def on_stop(self) -> None:
        super().on_stop()
        if self.db is not None:
            self.db.shutdown()

    def receiveMsg_RegistryUpdate(self, msg: m.RegistryUpdate, sender: Any) -> None:
        super().receiveMsg_RegistryUpdate(msg, sender)
        # Again whenever Cron's address changes: Cron restarts on its own (independent, actors/tree.py)
        # and a new Cron knows only its built-in jobs.
        cron = self.registry.get("Cron")
        if cron is not None and cron != self.cron_registered and self.contracts.ticket_registry is not None:
            job = m.CronRegister(SUBMIT_JOB, self.name, SUBMIT_INTERVAL, 300.0)
            self.send(cron, job)
            self.cron_registered = cron

    def receiveMsg_EthRequest(self, msg: cm.EthRequest, sender: Any) -> None:
        if msg.method not in RAW_METHODS:
            known = ", ".join(RAW_METHODS)
            error = f"{msg.method!r} is not a raw read this node forwards; expected one of {known}"
            self.send(sender, cm.ChainAnswer(msg.tag, False, None, cm.METHOD_NOT_FOUND, error))
            return
        self.run(sender, msg.tag, lambda: self.rpc.call(msg.method, list(msg.params)))

    def receiveMsg_SubmitTickets(self, msg: cm.SubmitTickets, sender: Any) -> None:
        self.run(sender, msg.tag, lambda: self._submit(msg.epoch))

    def receiveMsg_RunJob(self, msg: m.RunJob, sender: Any) -> None:
        tag = f"job-{msg.name}-{time.monotonic()}"
        self.jobs[tag] = (sender, time.perf_counter())
        self.run(self.myAddress, tag, lambda: self._submit(None))

    def receiveMsg_ChainAnswer(self, msg: cm.ChainAnswer, sender: Any) -> None:
        job = self.jobs.pop(msg.tag, None)  # our own Cron job's answer
        if job is not None:
            cron, started = job
            self.send(cron, m.JobDone(SUBMIT_JOB, msg.ok, msg.error, time.perf_counter() - started))

    def _submit(self, epoch: int | None) -> dict[str, Any]:
        registry = TicketRegistry(self.rpc, self.contracts.require("ticket_registry"))
        if epoch is None:
            timestamp = hx.parse_quantity(self.rpc.get_block("latest")["timestamp"], "block timestamp")
            epoch = epoch_of(timestamp, self.config.epoch_length) - 1
        with self.reader_lock:  # opened on first use, by whichever pool thread gets here first
            if self.reader is None:
                self.db, self.reader, problem = _open_reader(self.config)
                if self.reader is None:
                    raise StorageError(f"cannot read the tickets to submit: {problem}")
            reader = self.reader
        rows = reader.unsubmitted_tickets(epoch, SUBMIT_LIMIT)
        key = load_or_create_node_key(Path(self.config.node_key_path))
        submitter = TicketSubmitter(registry, KeySigner(key.to_bytes()))
        outcomes = submitter.submit([ticket_of_row(row) for row in rows])
        ops = mark_ops(rows, outcomes, time.time())
        if ops:
            self.post("Model.Sql.Worker", m.SqlWrite(tuple(ops), tag="ticket-submit"))
        return {
            "epoch": epoch,
            "sent": sum(1 for o in outcomes if o.accepted is not None),
            "accepted": sum(1 for o in outcomes if o.accepted),
            "rejected": dict(Counter(o.reason for o in outcomes if o.accepted is False)),
            "not_sent": sum(1 for o in outcomes if o.accepted is None),
            "added_bytes": sum(o.added_bytes for o in outcomes),
        }

    def receiveMsg_SqlWritten(self, msg: m.SqlWritten, sender: Any) -> None:
        if not msg.ok:
            self.log.error("recording submitted tickets failed: %s", msg.error)


class RemoteChainMonitor(_PoolActor):
    def on_start(self, init: m.Init) -> None:
        cfg = self.config
        self._start_pool(1)
        self.monitor = HeadMonitor(cfg.chain_rpc, cfg.epoch_length)
        contracts = ChainContracts.from_config(cfg)
        if not contracts.configured:
            self.monitor.not_configured(f"not configured: {contracts.problem}")
        # One client per endpoint: the monitor reports each one's health, not just the first's.
        timeout = min(cfg.chain_timeout, POLL_SECONDS * 2)
        self.clients = {url: RemoteRpc([url], cfg.chain_id, timeout=timeout) for url in cfg.chain_rpc}
        self.polling = False
        self.poll_seconds = float(getattr(cfg, "chain_poll_interval", POLL_SECONDS))
        self._poll()

    def on_pubsub_ready(self) -> None:
        self.publish("snapshot", "chain", self.monitor.snapshot())

    def on_timer(self, payload: Any) -> None:
        if payload == "poll":
            self._poll()

    def _poll(self) -> None:
        self.wakeupAfter(self.poll_seconds, payload="poll")
        if self.polling:  # the previous poll still waits on a slow endpoint
            return
        self.polling = True

        def work() -> None:
            results: list[tuple[str, Any]] = []
            for url, client in self.clients.items():
                started = time.perf_counter()
                try:
                    block = client.get_block("latest")
                    number = hx.parse_quantity(block["number"], "number")
                    stamp = hx.parse_quantity(block["timestamp"], "timestamp")
                    results.append((url, (number, stamp, time.perf_counter() - started)))
                except ChrError as exc:
                    results.append((url, str(exc)))
            self.post("__self__", ("polled", results))

        self.pool.submit(work)

    def on_bridge(self, message: Any, extra: dict[str, Any]) -> None:
        if isinstance(message, tuple) and message[0] == "polled":
            self.polling = False
            for url, outcome in message[1]:
                if isinstance(outcome, tuple):
                    self.monitor.observe(url, *outcome)
                    self.monitor.chain_id = self.config.chain_id
                else:
                    self.monitor.failed(url, outcome)
            snapshot = self.monitor.snapshot()
            self.stats.set_gauge("chain_head_block", float(snapshot["head"] or 0))
            self.publish("snapshot", "chain", snapshot)
            return
        super().on_bridge(message, extra)

    def receiveMsg_ChainStatusRequest(self, msg: cm.ChainStatusRequest, sender: Any) -> None:
        self.send(sender, cm.ChainAnswer(msg.tag, True, self.monitor.snapshot()))


class RemoteChainCache(_PoolActor):
    def on_start(self, init: m.Init) -> None:
        cfg = self.config
        self._start_pool(cfg.worker_pool_size)
        self.db, reader, self.l2_problem = _open_reader(cfg)
        store = None if reader is None else ReaderStore(reader, self._queue_write)
        if reader is None:
            self.log.warning("L2 cache off: %s", self.l2_problem)
        rpc = _rpc(cfg)
        wait = len(cfg.chain_rpc) * cfg.chain_timeout + 10.0
        self.cache = TieredCache(cfg.cache_size, store, executor=self.pool, wait_timeout=wait)
        self.contracts = ChainContracts.from_config(cfg)
        self.service = ChainService(rpc, self.contracts, self.cache)
        self.fleet_check = ChainFleetCheck(self.service)
        self.payments = ChainPaymentCheck(self.service, PaymentLedger(store))
        self.writes: list[CachePut] = []
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

    # -- L2 writes go to the single writer, batched ---------------------------------------------

    def _queue_write(self, op: CachePut) -> None:  # from pool threads
        self.post("__self__", op)

    def on_bridge(self, message: Any, extra: dict[str, Any]) -> None:
        if isinstance(message, tuple) and message[0] == "fleet":
            self.publish("snapshot", "fleet_chain", message[1])
            return
        if isinstance(message, CachePut):
            self.writes.append(message)
            if not self.flush_due:
                self.flush_due = True
                self.wakeupAfter(FLUSH_SECONDS, payload="flush")
            return
        super().on_bridge(message, extra)

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
            self.post("__self__", ("fleet", status))

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
