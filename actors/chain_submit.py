"""RemoteChain.RPC (SPEC 5, SPEC 7): raw reads (EthRequest, uncached) and ticket submission
(SubmitTickets, and the Cron job "ticket_submit", which it registers itself every
`ticket_submit_interval` seconds). A run that leaves tickets unsent (the chain is down, the node
cannot pay the gas, the registry refused the batch) is reported to Cron as failed with the
reason (issue 7), never as a success. Each run's outcome and the registry's count of the bytes
served are published as snapshot "reward" (`reward_status`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from actors import chain_messages as cm
from actors import messages as m
from actors.chain_pool import PoolActor, chain_rpc, open_reader
from chrnode.chain import hexcodec as hx
from chrnode.chain.contracts import TicketRegistry
from chrnode.chain.service import PROXIED_METHODS, ChainContracts
from chrnode.chain.submitter import TicketSubmitter, mark_ops, ticket_of_row
from chrnode.chain.tx import KeySigner
from chrnode.errors import ChainError, ChrError, StorageError
from chrnode.identity import load_or_create_node_key
from chrnode.storage.db import NodeDatabase
from chrnode.storage.reader import Reader
from chrnode.ticket import epoch_of

SUBMIT_JOB = "ticket_submit"
SUBMIT_FIRST_DELAY = 300.0  # after start: let the node settle and the chain monitor find the head
SUBMIT_LIMIT = 4 * TicketRegistry.MAX_BATCH
RAW_METHODS = (
    *PROXIED_METHODS,
    "eth_getBlockByNumber",
    "eth_getTransactionByHash",
    "eth_gasPrice",
    "net_version",
)


class RemoteChainRpc(PoolActor):
    def on_start(self, init: m.Init) -> None:
        cfg = self.config
        self._start_pool(cfg.worker_pool_size)
        self.rpc = self.follower = chain_rpc(cfg)
        self.contracts = ChainContracts.from_config(cfg)
        self.db: NodeDatabase | None = None
        self.reader: Reader | None = None
        self.reader_lock = threading.Lock()
        self.cron_registered: Any = None  # the Cron address the submit job was registered with
        self.jobs: dict[str, tuple[Any, float]] = {}  # tag -> (cron address, started)
        self.reward: dict[str, Any] = {}

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
            interval = float(self.config.ticket_submit_interval)
            job = m.CronRegister(SUBMIT_JOB, self.name, interval, min(SUBMIT_FIRST_DELAY, interval))
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
        """One run (pool thread): the result dict, or ChainError when tickets were left unsent."""
        registry = TicketRegistry(self.rpc, self.contracts.require("ticket_registry"))
        if epoch is None:
            timestamp = hx.parse_quantity(self.rpc.get_block("latest")["timestamp"], "block timestamp")
            epoch = epoch_of(timestamp, self.config.epoch_length) - 1
        with self.reader_lock:  # opened on first use, by whichever pool thread gets here first
            if self.reader is None:
                self.db, self.reader, problem = open_reader(self.config)
                if self.reader is None:
                    raise StorageError(f"cannot read the tickets to submit: {problem}")
            reader = self.reader
        rows = reader.unsubmitted_tickets(epoch, SUBMIT_LIMIT)
        key = load_or_create_node_key(Path(self.config.node_key_path))
        signer = KeySigner(key.to_bytes())
        submitter = TicketSubmitter(registry, signer)
        outcomes = submitter.submit([ticket_of_row(row) for row in rows])
        ops = mark_ops(rows, outcomes, time.time())
        if ops:
            self.post("Model.Sql.Worker", m.SqlWrite(tuple(ops), tag="ticket-submit"))
        result: dict[str, Any] = {
            "epoch": epoch,
            "tickets": len(rows),
            "sent": sum(1 for o in outcomes if o.accepted is not None),
            "accepted": sum(1 for o in outcomes if o.accepted),
            "rejected": dict(Counter(o.reason for o in outcomes if o.accepted is False)),
            "not_sent": sum(1 for o in outcomes if o.accepted is None),
            "added_bytes": sum(o.added_bytes for o in outcomes),
            "finished_at": time.time(),
        }
        unsent = Counter(o.reason for o in outcomes if o.accepted is None)
        error = ""
        if unsent:
            reason, _ = unsent.most_common(1)[0]
            error = (
                f"{result['not_sent']} of {len(rows)} tickets of epoch {epoch} not sent (kept for the next "
                f"run): {reason}"
            )
        self.post(self.name, cm.Submitted(self._reward(registry, signer.address, result, error)))
        if error:
            raise ChainError(error)
        return result

    def _reward(
        self, registry: TicketRegistry, node: bytes, result: dict[str, Any], error: str
    ) -> dict[str, Any]:
        """Snapshot "reward" (`reward_status`): what the registry credits this node with."""
        out: dict[str, Any] = {
            "epoch": result["epoch"],
            "last_run": {**result, "ok": not error, "error": error},
        }
        try:
            out["bytes_served"] = str(registry.bytes_served(node, result["epoch"]))
            out["connections_served"] = registry.connections_served(node, result["epoch"])
        except ChrError as exc:
            out["bytes_served_error"] = str(exc)
        if result["sent"]:
            out["last_submitted"] = result["finished_at"]
        return out

    def receiveMsg_Submitted(self, msg: cm.Submitted, sender: Any) -> None:
        reward = {**self.reward, **msg.reward}
        if "last_submitted" not in msg.reward and "last_submitted" in self.reward:
            reward["last_submitted"] = self.reward["last_submitted"]
        self.reward = reward
        self.publish("snapshot", "reward", reward)

    def receiveMsg_SqlWritten(self, msg: m.SqlWritten, sender: Any) -> None:
        if not msg.ok:
            self.log.error("recording submitted tickets failed: %s", msg.error)
