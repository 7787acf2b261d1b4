"""The DHT over real peer links: chrnode.dht.node.DhtNode driven by the network loop (SPEC 4, 6).

The machine decides; this adapter only translates. Requests arriving on a link (PING, STORE,
FIND_NODE, FIND_VALUE) are typed by the link, turned into the machine's requests (signed objects
checked by chrnode.net.codecs on the way) and answered with what it returns. The machine's
``Send`` actions become requests over the link to that contact (dialled on demand through
PeerNetwork), their answers or failures go back in, and its timers are one loop timer at
``next_deadline()``. Time is wall-clock seconds, the unit of the objects' ``expires``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from chrnode.dht import DhtProtocolError
from chrnode.dht import messages as dm
from chrnode.dht.ids import Contact
from chrnode.dht.lookup import LookupResult
from chrnode.dht.node import DhtNode, LookupDone, Published, Send
from chrnode.dht.store import STORED
from chrnode.net.codecs import ObjectCodec, contact_of
from chrnode.net.dht_wire import from_peer_answer, from_peer_request, to_peer_answer, to_peer_request
from chrnode.net.peers import PeerNetwork
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm
from chrnode.peer.link import PeerLink
from chrnode.peer.link_send import PeerError

__all__ = ["DhtService"]

_log = logging.getLogger("chrnode.dht")


class DhtService:
    def __init__(
        self,
        network: PeerNetwork,
        node: DhtNode,
        codec: ObjectCodec,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.network = network
        self.node = node
        self.codec = codec
        self.clock = clock
        self.loop = network.loop
        self._lookups: dict[int, asyncio.Future[LookupResult]] = {}
        self._published: dict[bytes, list[asyncio.Future[list[Contact]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self.lookups_done = 0
        self.lookups_failed = 0
        self.stores_refused: dict[str, int] = {}
        self.on_stored: list[Callable[[SignedObject], None]] = []  # a peer's STORE was kept
        # The machine joined through the fleet again after its table emptied (chrnode.dht.rejoin).
        self.on_rejoined: list[Callable[[LookupResult], None]] = []
        for msg_type in (pm.PING, pm.STORE, pm.FIND_NODE, pm.FIND_VALUE):
            network.handlers[msg_type] = self._request
        network.on_link_up.append(self._link_up)

    # ---- the node's work ------------------------------------------------------------------------
    async def join(self, seeds: Iterable[Contact]) -> LookupResult:
        """Join the network through ``seeds`` (fleet nodes): a lookup of our own id, then one in
        every bucket farther than the nearest neighbour's (Kademlia 2.3), awaited too, so a node
        that has joined holds a full table and a link to each of its contacts."""
        lookup_id, actions = self.node.join(list(seeds), self.clock())
        result = await self._await_lookup(lookup_id, actions)
        if result.ok:
            ids, actions = self.node.refresh_beyond_nearest(self.clock(), result.closest)
            futures = [self._future(i) for i in ids]  # before acting: some may finish at once
            self._act(actions)
            await asyncio.gather(*futures)
        return result

    async def lookup(self, target: bytes, *, find_value: bool = False) -> LookupResult:
        lookup_id, actions = self.node.lookup(target, self.clock(), find_value=find_value)
        return await self._await_lookup(lookup_id, actions)

    async def find_value(self, key: bytes) -> SignedObject | None:
        result = await self.lookup(key, find_value=True)
        if result.value is None:
            return None
        obj = result.value.obj
        return obj if isinstance(obj, SignedObject) else self.codec.object_of(obj)

    async def publish(self, obj: SignedObject) -> list[Contact]:
        """Hold ``obj`` here and STORE it at the k closest nodes; the nodes it was sent to."""
        value = self.codec.decode_value(obj)
        status, actions = self.node.publish(value, self.clock())
        if status != STORED:
            raise DhtProtocolError(status, f"this node refused its own object: {status}")
        future: asyncio.Future[list[Contact]] = self.loop.create_future()
        self._published.setdefault(obj.key, []).append(future)
        self._act(actions)
        return await future

    def disown(self, key: bytes, signer: bytes) -> bool:
        """Drop the value held here for ``key`` if ``signer`` signed it (that node says it no
        longer serves the device); True if one was dropped."""
        value = self.node.store.get(key, self.clock())
        obj = value.obj if value is not None else None
        if isinstance(obj, SignedObject) and obj.signer == signer:
            self.node.store.drop(key)
            return True
        return False

    def hold(self, obj: SignedObject) -> str:
        """Keep ``obj`` here without sending it (restored from storage at start)."""
        return self.node.store.put(self.codec.decode_value(obj), self.clock())

    async def _await_lookup(self, lookup_id: int, actions: list[Any]) -> LookupResult:
        future = self._future(lookup_id)
        self._act(actions)
        return await future

    def _future(self, lookup_id: int) -> asyncio.Future[LookupResult]:
        future: asyncio.Future[LookupResult] = self.loop.create_future()
        self._lookups[lookup_id] = future
        return future

    # ---- requests from peers --------------------------------------------------------------------
    def _link_up(self, link: PeerLink) -> None:
        if link.record is not None:
            self._act(self.node.contact_seen(contact_of(link.record), self.clock()))

    def _request(self, link: PeerLink, msg: Any, request_id: int | None) -> None:
        assert link.record is not None
        msg_type, _ = pm.to_fields(msg)
        try:
            request = from_peer_request(msg, self.codec)
        except DhtProtocolError as exc:
            self.stores_refused[exc.code] = self.stores_refused.get(exc.code, 0) + 1
            link.error(msg_type, request_id, exc.code, exc.message)
            return
        answer, actions = self.node.on_request(contact_of(link.record), request, self.clock())
        self._answer(link, msg_type, request_id, answer)
        if isinstance(request, dm.Store) and isinstance(answer, dm.Stored):
            obj = request.value.obj
            for callback in self.on_stored:
                if isinstance(obj, SignedObject):
                    callback(obj)
        self._act(actions)

    def _answer(self, link: PeerLink, msg_type: int, request_id: int | None, answer: dm.Answer) -> None:
        reply = to_peer_answer(answer, self.codec, self._record_of)
        if isinstance(reply, dm.Refused):
            self.stores_refused[reply.code] = self.stores_refused.get(reply.code, 0) + 1
            link.error(msg_type, request_id, reply.code, reply.message)
        elif isinstance(reply, pm.Nodes):  # in a frame of the request's type (SPEC 4)
            link.answer_fields(msg_type, request_id, pm.nodes_fields(reply, msg_type)[1])
        elif isinstance(reply, pm.Empty):
            link.answer_fields(msg_type, request_id, {})
        else:
            link.answer(request_id, reply)

    def _record_of(self, contact: Contact) -> SignedObject | None:
        if isinstance(contact.record, SignedObject):
            return contact.record
        live = self.network.links.get(contact.address)  # a fleet node from config: its hello's
        return live.record if live is not None else None

    # ---- the machine's actions ------------------------------------------------------------------
    def _act(self, actions: list[Any] | None) -> None:
        for action in actions or ():
            if isinstance(action, Send):
                link = self.network.links.get(action.to.address)
                if link is not None and not link.closed:
                    self._send_on(link, action)  # the usual case: no task, no extra loop turn
                else:
                    task = self.loop.create_task(self._send(action))
                    task.add_done_callback(_quiet)
            elif isinstance(action, LookupDone):
                self._lookup_done(action)
            elif isinstance(action, Published):
                for future in self._published.pop(action.key, []):
                    if not future.done():
                        future.set_result(list(action.sent_to))
        self._schedule()

    def _lookup_done(self, done: LookupDone) -> None:
        if done.result.ok:
            self.lookups_done += 1
        else:
            self.lookups_failed += 1
        future = self._lookups.pop(done.lookup_id, None)
        if future is not None and not future.done():
            future.set_result(done.result)
        if done.purpose == "rejoin" and len(self.node.table):
            for callback in self.on_rejoined:
                callback(done.result)

    async def _send(self, send: Send) -> None:
        contact = send.to
        try:
            link = await self.network.connect(contact.address, contact.host, contact.peer_port)
        except PeerError:
            self._act(self.node.on_failure(send.request_id, self.clock()))
            return
        self._send_on(link, send)

    def _send_on(self, link: PeerLink, send: Send) -> None:
        try:
            request = to_peer_request(send.request, self.codec)
        except DhtProtocolError as exc:  # a value that lapsed meanwhile: never raise into a link
            _log.debug("not sending %s to %s: %s", type(send.request).__name__, link.label(), exc)
            self._act(self.node.on_failure(send.request_id, self.clock()))
            return
        timeout = self.node.config.hard_timeout + 1.0  # the machine's own hard timeout comes first
        link.request(request, lambda answer: self._answered(send, link, answer), timeout)

    def _answered(self, send: Send, link: PeerLink, answer: Any) -> None:
        now = self.clock()
        try:
            parsed = from_peer_answer(send.request, answer, self.codec)
        except DhtProtocolError as exc:
            _log.debug("bad answer from %s: %s", link.label(), exc)
            parsed = None
        if parsed is None:
            self.network.failed(send.to.address)
            self._act(self.node.on_failure(send.request_id, now))
            return
        self.network.answered(send.to.address)
        # The sender as the link's hello proved it, with its signed record (a fleet node from
        # config has none until then): the table keeps that copy.
        sender = contact_of(link.record) if link.record is not None else None
        self._act(self.node.on_answer(send.request_id, parsed, now, sender=sender))

    # ---- timers -----------------------------------------------------------------------------------
    def _schedule(self) -> None:
        deadline = self.node.next_deadline()
        if deadline >= self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_later(max(0.0, deadline - self.clock()), self._tick)

    def _tick(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        self._act(self.node.tick(self.clock()))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future in self._lookups.values():
            if not future.done():
                future.cancel()

    def status(self) -> dict[str, Any]:
        return {
            "routing_table": len(self.node.table),
            "values": len(self.node.store),
            "outstanding": self.node.outstanding,
            "lookups_running": self.node.running_lookups,
            "lookups_done": self.lookups_done,
            "lookups_failed": self.lookups_failed,
            "refused": dict(self.stores_refused),
        }


def _quiet(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("DHT send failed", exc_info=task.exception())
