"""The base of the RemoteChain actors (SPEC 7): chain work in a thread pool, answers through the
ThreadBridge, and the Monitor's endpoint probes passed on to each actor's failover client.

Chain and HTTP work never runs on an actor's own thread: it goes to a thread pool of
`worker_pool_size` threads and the answer comes back through the ThreadBridge, so every actor
keeps answering while endpoints time out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from actors import chain_messages as cm
from actors.base import ChrActor
from chrnode.chain.cache_policy import Hit
from chrnode.chain.rpc import RemoteRpc
from chrnode.errors import ChrError, StorageError
from chrnode.storage.db import NodeDatabase, database_path, open_database
from chrnode.storage.reader import Reader

ENDPOINTS_TOPIC = "chain_endpoints"  # Monitor -> RPC and Cache: {url: (answers, error)}
MAX_QUEUED_PER_THREAD = 64  # beyond pool size x this, requests are refused `busy`, not queued


class PoolActor(ChrActor):
    """Blocking work in a thread pool; answers posted back through the bridge and sent from here.

    Subclasses with a failover client (`self.rpc`) follow the Monitor's probes (topic
    ENDPOINTS_TOPIC), so an endpoint the Monitor saw fail is not asked first, and one it saw
    answer again is used at once (chrnode.chain.rpc)."""

    SUBSCRIBE: tuple[str, ...] = (ENDPOINTS_TOPIC,)
    follower: RemoteRpc | None = None  # the failover client that follows the Monitor's probes

    def on_published(self, topic: str, key: str, payload: Any) -> None:
        client = self.follower
        if topic != ENDPOINTS_TOPIC or client is None or not isinstance(payload, dict):
            return
        for url, (up, error) in payload.items():
            if url not in client.endpoints:
                continue
            if up:
                client.mark_answering(url)
            else:
                client.mark_failing(url, f"the chain monitor's probe failed: {error}")

    def _start_pool(self, threads: int) -> None:
        self.start_bridge()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix=f"chain-{self.name}")
        self.max_queued = threads * MAX_QUEUED_PER_THREAD
        self.queued = 0
        self._post_lock = threading.Lock()
        self._stopped = False

    def post(self, target: str, message: Any) -> None:
        """From a pool thread: have `message` sent to the actor named `target` (this actor's own
        name: handled here, on the actor's thread); dropped once stopping."""
        with self._post_lock:
            if not self._stopped and self.bridge is not None:
                self.bridge.post(target, message)

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
            self.post(self.name, cm.PoolAnswer(answer, sender))

        self.pool.submit(job)

    def receiveMsg_PoolAnswer(self, msg: cm.PoolAnswer, sender: Any) -> None:
        self.queued -= 1
        self.send(msg.reply_to, msg.answer)

    def on_stop(self) -> None:
        with self._post_lock:
            self._stopped = True
        # Running calls end within their RemoteRpc timeout; nothing waits for them here.
        self.pool.shutdown(wait=False, cancel_futures=True)


def chain_rpc(config: Any) -> RemoteRpc:
    """The failover client of the RPC and Cache actors; its endpoint failures are logged at INFO,
    since RemoteChain.Monitor warns about each endpoint (at the pace of its backoff) already."""
    return RemoteRpc(
        config.chain_rpc, config.chain_id, timeout=config.chain_timeout, failure_log_level=logging.INFO
    )


def open_reader(config: Any) -> tuple[NodeDatabase | None, Reader | None, str]:
    try:
        db = open_database(database_path(Path(config.data_dir)), readonly=True)
    except StorageError as exc:
        return None, None, str(exc)
    return db, Reader(db), ""
