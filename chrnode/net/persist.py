"""What the network keeps across restarts, as storage ops (chrnode.storage): objects and peers.

:class:`OpsPersistence` is the network's ``Persistence``: each object held becomes a ``DhtPut``
(table dht_objects, the object's wire form as msgpack), each peer event a ``PeerSeen``
(peer_history). Ops are queued and written in batches, one write in flight at a time, so a STORE
flood costs one transaction per batch and never waits the network loop on the disk. A failed
write is logged and dropped: the objects are republished by their signers anyway.
:func:`objects_of` turns stored rows back into checked objects at start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgpack

from chrnode.dht import DhtProtocolError
from chrnode.net.codecs import ObjectCodec
from chrnode.objects.signed import SignedObject
from chrnode.storage.ops import DhtPut, PeerSeen
from chrnode.storage.rows import DhtObject

__all__ = ["OpsPersistence", "objects_of"]

_log = logging.getLogger("chrnode.net")

MAX_BATCH = 500
MAX_QUEUED = 20_000  # beyond this the oldest ops are dropped (a flood while storage is down)


class OpsPersistence:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        write: Callable[[list[Any]], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.loop = loop
        self.write = write
        self.clock = clock
        self.queue: list[Any] = []
        self.written = 0
        self.failed = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def object_held(self, obj: SignedObject) -> None:
        value = msgpack.packb(obj.to_wire(), use_bin_type=True)
        self._add(DhtPut(obj.key, value, obj.signer, obj.seq, float(obj.expires)))

    def peer_seen(self, address: bytes, connected: bool, ok: bool | None) -> None:
        self._add(PeerSeen("0x" + address.hex(), int(self.clock()), connected, ok))

    def _add(self, op: Any) -> None:
        self.queue.append(op)
        if len(self.queue) > MAX_QUEUED:
            drop = len(self.queue) - MAX_QUEUED
            del self.queue[:drop]
            self.dropped += drop
        if self._task is None:
            self._task = self.loop.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
                try:
                    await self.write(batch)
                    self.written += len(batch)
                except Exception as exc:  # storage restarting or full: log, keep the network going
                    self.failed += len(batch)
                    _log.warning("could not persist %d network records: %s", len(batch), exc)
        finally:
            self._task = None

    async def drain(self) -> None:
        """Wait for the queued ops to be written (at stop)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    def status(self) -> dict[str, int]:
        return {
            "queued": len(self.queue),
            "written": self.written,
            "failed": self.failed,
            "dropped": self.dropped,
        }


def objects_of(rows: Iterable[DhtObject], codec: ObjectCodec) -> list[SignedObject]:
    """The stored rows that still decode and pass the object rules (others are skipped)."""
    out = []
    for row in rows:
        try:
            out.append(codec.object_of(msgpack.unpackb(row.value, raw=False)))
        except (DhtProtocolError, ValueError, msgpack.UnpackException) as exc:
            _log.info("stored object 0x%s skipped: %s", row.key.hex(), exc)
    return out
