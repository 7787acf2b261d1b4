"""Where a device is served (SPEC 6 locations): the edge server's DeviceResolver over the DHT.

A device not connected here is looked up in the DHT: its ``location`` object, checked (the
device's ticket names the signing node, or its hello proof where this node accepts those); the
serving node is reached through the pool (its live link, else its ``node`` object from the DHT);
the answer is cached for ``location_ttl`` seconds. A portopen that the serving node answers
``not_found`` (the device moved) drops the entry and the target's end asks afresh once, so a
device that reconnected to another node is found there at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chrnode.edge.ports import PortEnd, describe
from chrnode.objects.errors import ObjectError
from chrnode.objects.kinds import LOCATION, NODE, NodeRecord, check_kind
from chrnode.peer.link import PeerLink
from chrnode.peer.link_send import PeerError

if TYPE_CHECKING:
    from chrnode.net.dht_service import DhtService
    from chrnode.net.relay import PeerRelay

__all__ = ["NetworkResolver"]

_log = logging.getLogger("chrnode.relay")


@dataclass
class _Location:
    node: bytes
    host: str
    port: int
    expires: float


class NetworkResolver:
    """DeviceResolver over the DHT: a device's location, checked, cached, then its node's link."""

    def __init__(
        self,
        relay: PeerRelay,
        dht: DhtService,
        *,
        accept_hello: bool = True,
        location_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.relay = relay
        self.dht = dht
        self.accept_hello = accept_hello
        self.location_ttl = location_ttl
        self.clock = clock
        self._cache: dict[bytes, _Location] = {}
        self.lookups = 0
        self.found = 0
        relay.on_moved.append(self.forget)

    def forget(self, device: bytes) -> None:
        self._cache.pop(device, None)

    async def find(self, device: bytes) -> PortEnd | None:
        link = await self.link_to(device)
        return None if link is None else self.relay.target_end(link, device, self.relocate)

    async def relocate(self, device: bytes, old_node: bytes) -> PeerLink | None:
        """The device's node after ``old_node`` said not_found: a fresh lookup, no cache, and no
        copy here of the location ``old_node`` signed (it disowned it)."""
        self.forget(device)
        self.dht.disown(device, old_node)
        return await self.link_to(device)

    async def link_to(self, device: bytes) -> PeerLink | None:
        where = self._cache.get(device)
        if where is None or where.expires <= self.clock():
            where = await self._locate(device)
            if where is None:
                return None
        try:
            return await self.relay.network.connect(where.node, where.host, where.port)
        except PeerError as exc:
            node = where.node.hex()
            _log.info("%s is at node 0x%s, which cannot be reached: %s", describe(device), node, exc)
            self.forget(device)
            return None

    async def _locate(self, device: bytes) -> _Location | None:
        self.lookups += 1
        obj = await self.dht.find_value(device)
        if obj is None or obj.kind != LOCATION:
            return None
        try:
            check_kind(obj, accept_hello=self.accept_hello)
        except ObjectError as exc:
            _log.info("refused the location of %s: %s", describe(device), exc)
            return None
        node = obj.signer
        if node == self.relay.network.key.address:
            return None  # our own record of a device that has left
        record = await self.node_record(node)
        if record is None:
            return None
        self.found += 1
        where = _Location(node, record.host, record.peer_port, self.clock() + self.location_ttl)
        self._cache[device] = where
        return where

    async def node_record(self, node: bytes) -> NodeRecord | None:
        """Where ``node`` listens: from its live link, else its ``node`` object in the DHT."""
        link = self.relay.network.links.get(node)
        if link is not None and link.record is not None:
            return NodeRecord.from_object(link.record)
        obj = await self.dht.find_value(node)
        if obj is None or obj.kind != NODE or obj.key != node:
            return None
        return NodeRecord.from_object(obj)

    def status(self) -> dict[str, Any]:
        return {"location_lookups": self.lookups, "locations_found": self.found, "cached": len(self._cache)}
