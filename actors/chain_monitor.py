"""RemoteChain.Monitor (SPEC 7 "a monitor that follows the head block"; issue 7).

It probes every endpoint each `POLL_SECONDS` (in parallel, each with its own backoff, so a
hung one holds up no other), publishes snapshot "chain" (chrnode.chain.monitor: head, lag,
epoch, each endpoint's state, the node's balance) and the probes on ENDPOINTS_TOPIC for the
other chain actors' failover clients, reads the Fleet and BNS events of each new block
(chrnode.chain.watch) and sends RemoteChain.Cache a CacheInvalidate for what they changed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from actors import chain_messages as cm
from actors import messages as m
from actors.chain_pool import ENDPOINTS_TOPIC, PoolActor
from chrnode.chain import hexcodec as hx
from chrnode.chain.monitor import HeadMonitor
from chrnode.chain.rpc import RemoteRpc
from chrnode.chain.service import ChainContracts
from chrnode.chain.watch import START_LOOKBACK, ChainWatch, Invalidation
from chrnode.errors import ChainError, ChrError
from chrnode.identity import load_or_create_node_key

POLL_SECONDS = 2.0
BALANCE_SECONDS = 15.0  # how often the node account's balance is read


class RemoteChainMonitor(PoolActor):
    """Probes every endpoint (in parallel, each with its own backoff), follows the Fleet and BNS
    events of each new block (chrnode.chain.watch) and tells RemoteChain.Cache what they made
    stale, and reads the node account's balance."""

    SUBSCRIBE = ()

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
        # A hung endpoint must not hold up the others' probes: one thread each.
        self.probes = ThreadPoolExecutor(max(1, len(self.clients)), thread_name_prefix="chain-probe")
        self.watch = ChainWatch(bns=contracts.bns, lookback=START_LOOKBACK) if contracts.configured else None
        try:
            self.node_address: bytes | None = load_or_create_node_key(Path(cfg.node_key_path)).address
        except (ChrError, OSError) as exc:
            self.node_address = None
            self.log.warning("no node key, so no balance to report: %s", exc)
        self.balance_due = 0.0
        self.polling = False
        self.poll_seconds = float(getattr(cfg, "chain_poll_interval", POLL_SECONDS))
        self._poll()

    def on_stop(self) -> None:
        super().on_stop()
        self.probes.shutdown(wait=False, cancel_futures=True)

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
        read_balance = self.node_address is not None and time.monotonic() >= self.balance_due
        if read_balance:
            self.balance_due = time.monotonic() + BALANCE_SECONDS

        def work() -> None:
            results = list(self.probes.map(lambda url: (url, self._probe(url)), self.clients))
            up = [url for url, outcome in results if isinstance(outcome, tuple)]
            client = self.clients[up[0]] if up else None
            events = self._events(client, _head_of(results, up))
            balance = self._balance(client) if read_balance else None
            self.post(self.name, cm.Polled(results, events, balance))

        self.pool.submit(work)

    def _probe(self, url: str) -> Any:
        """(head, timestamp, latency), an error string, or the seconds of backoff left (not due)."""
        client = self.clients[url]
        wait = client.retry_in(url)
        if wait > 0:
            return wait
        started = time.perf_counter()
        try:
            block = client.get_block("latest")
            number = hx.parse_quantity(block["number"], "number")
            stamp = hx.parse_quantity(block["timestamp"], "timestamp")
        except ChrError as exc:
            return str(exc)
        return number, stamp, time.perf_counter() - started

    def _events(self, client: RemoteRpc | None, head: int | None) -> tuple[Invalidation, str] | None:
        """Read the watched events of the blocks since the last poll (pool thread)."""
        if self.watch is None or client is None or head is None:
            return None
        span = self.watch.next_span(head)
        if span is None:
            return None
        if self.watch.too_long(*span):
            return self.watch.skip(*span), ""
        try:
            logs = client.call("eth_getLogs", [self.watch.logs_filter(*span)])
            if not isinstance(logs, list):
                raise ChainError(f"eth_getLogs returned {str(logs)[:80]!r}; expected a list of logs")
            return self.watch.observe(*span, logs), ""
        except ChrError as exc:  # the cursor stays: the same blocks are read at the next poll
            return Invalidation(reason="not read"), f"eth_getLogs {span[0]}..{span[1]}: {exc}"

    def _balance(self, client: RemoteRpc | None) -> tuple[int | None, int | None, str]:
        if client is None or self.node_address is None:
            return None, None, "no chain endpoint answers"
        try:
            return client.get_balance(self.node_address), client.gas_price(), ""
        except ChrError as exc:
            return None, None, str(exc)

    def receiveMsg_Polled(self, msg: cm.Polled, sender: Any) -> None:
        self.polling = False
        results, events, balance = msg.results, msg.events, msg.balance
        for url, outcome in results:
            if isinstance(outcome, tuple):
                self.monitor.observe(url, *outcome)
                self.monitor.chain_id = self.config.chain_id
            elif isinstance(outcome, float):
                self.monitor.backing_off(url, outcome)
            else:
                self.monitor.failed(url, outcome, retry_in=self.clients[url].retry_in(url))
        if events is not None:
            self._invalidate(*events)
        if balance is not None:
            self.monitor.balance(*balance)
        snapshot = self.monitor.snapshot()
        self.stats.set_gauge("chain_head_block", float(snapshot["head"] or 0))
        self.publish("snapshot", "chain", snapshot)
        probed = {url: (isinstance(o, tuple), o) for url, o in results if not isinstance(o, float)}
        if probed:
            self.publish(
                ENDPOINTS_TOPIC, "probes", {u: (up, "" if up else o) for u, (up, o) in probed.items()}
            )

    def _invalidate(self, drop: Invalidation, error: str) -> None:
        assert self.watch is not None
        if error:
            self.log.warning("chain events not read (tried again at the next poll): %s", error)
            self.monitor.watched(self.watch.events_seen, 0, None, error)
            return
        dropped = len(drop.keys)
        self.monitor.watched(self.watch.events_seen, dropped, (self.watch.next_block or 1) - 1)
        if not drop:
            return
        self.log.info(
            "chain changed %s cached read(s) (%s): dropping them",
            "every" if drop.everything else dropped,
            drop.reason,
        )
        message = cm.CacheInvalidate(drop.keys, drop.everything, drop.reason, drop.category)
        if not self.send_to("RemoteChain.Cache", message):
            self.log.warning("RemoteChain.Cache is not running: %s not invalidated", drop.reason)

    def receiveMsg_ChainStatusRequest(self, msg: cm.ChainStatusRequest, sender: Any) -> None:
        self.send(sender, cm.ChainAnswer(msg.tag, True, self.monitor.snapshot()))


def _head_of(results: list[tuple[str, Any]], up: list[str]) -> int | None:
    """The head of the first endpoint that answered this poll (the one the node uses)."""
    for url, outcome in results:
        if up and url == up[0]:
            return int(outcome[0])
    return None
