"""TicketStore: the best ticket per (device, fleet, epoch), in SQLite (SPEC 5, seed: TicketStore).

Saves go to Model.Sql.Worker as `TicketUpsert` (which keeps a ticket only when it beats the stored
one) and are answered after the commit, so a ticket the node acknowledged survives a crash.
Loads are answered from memory when this actor has seen the ticket, else from its own read-only
connection. Submitting the previous epoch's tickets to the chain is the Cron job `ticket_submit`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from actors import messages as m
from actors.base import ChrActor
from chrnode.errors import StorageError
from chrnode.storage.db import database_path, open_database
from chrnode.storage.ops import TicketUpsert
from chrnode.storage.reader import Reader

MEMORY_TICKETS = 10_000

Key = tuple[bytes, bytes, int]


class TicketStore(ChrActor):
    def on_start(self, init: m.Init) -> None:
        self.db = open_database(database_path(Path(self.config.data_dir)), readonly=True)
        self.reader = Reader(self.db)
        self.best: OrderedDict[Key, tuple[int, bytes]] = OrderedDict()
        self.waiting: dict[str, tuple[Any, m.SaveTicket]] = {}
        self.counter = 0

    def on_stop(self) -> None:
        self.db.shutdown()

    def receiveMsg_SaveTicket(self, msg: m.SaveTicket, sender: Any) -> None:
        self.counter += 1
        tag = f"save-{self.counter}"
        self.waiting[tag] = (sender, msg)
        op = TicketUpsert(
            msg.device, msg.fleet, msg.epoch, msg.total_bytes, msg.total_connections, msg.ticket, time.time()
        )
        if not self.send_to("Model.Sql.Worker", m.SqlWrite((op,), tag=tag)):
            self.waiting.pop(tag)
            self.send(
                sender, m.TicketSaved(msg.tag, False, error="storage is restarting; send the ticket again")
            )

    def receiveMsg_SqlWritten(self, msg: m.SqlWritten, sender: Any) -> None:
        waiting = self.waiting.pop(msg.tag, None)
        if waiting is None:
            return
        requester, save = waiting
        if not msg.ok:
            self.stats.incr("errors_total", labels={"category": "tickets"})
            self.send(requester, m.TicketSaved(save.tag, False, error=msg.error))
            return
        result = msg.results[0]
        stored = bool(getattr(result, "stored", False))
        row = getattr(result, "row", None)
        if row is not None:
            self._remember((row.device, row.fleet, row.epoch), row.total_bytes, row.ticket)
        if stored:
            self.stats.incr("tickets_stored_total")
        self.send(requester, m.TicketSaved(save.tag, True, stored))

    def receiveMsg_LoadTicket(self, msg: m.LoadTicket, sender: Any) -> None:
        key = (msg.device, msg.fleet, msg.epoch)
        known = self.best.get(key)
        if known is not None:
            self.best.move_to_end(key)
            self.send(sender, m.TicketLoaded(msg.tag, True, known[1]))
            return
        try:
            row = self.reader.best_ticket(msg.device, msg.fleet, msg.epoch)
        except StorageError as exc:
            self.send(sender, m.TicketLoaded(msg.tag, False, None, str(exc)))
            return
        if row is not None:
            self._remember(key, row.total_bytes, row.ticket)
        self.send(sender, m.TicketLoaded(msg.tag, True, row.ticket if row is not None else None))

    def _remember(self, key: Key, total_bytes: int, ticket: bytes) -> None:
        self.best[key] = (total_bytes, ticket)
        self.best.move_to_end(key)
        while len(self.best) > MEMORY_TICKETS:
            self.best.popitem(last=False)
