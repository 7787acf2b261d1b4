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
from chrnode.edge import codes
from chrnode.edge.messages import ErrorReply
from chrnode.net.codecs import ObjectCodec, contact_of
from chrnode.net.peers import PeerNetwork
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm
from chrnode.peer.link import PeerError, PeerLink

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
        for msg_type in (pm.PING, pm.STORE, pm.FIND_NODE, pm.FIND_VALUE):
            network.handlers[msg_type] = self._request
        network.on_link_up.append(self._link_up)

    # ---- the node's work ------------------------------------------------------------------------
    async def join(self, seeds: Iterable[Contact]) -> LookupResult:
        """Join the network through ``seeds`` (fleet nodes): a lookup of our own id."""
        lookup_id, actions = self.node.join(list(seeds), self.clock())
        return await self._await_lookup(lookup_id, actions)

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
        future: asyncio.Future[LookupResult] = self.loop.create_future()
        self._lookups[lookup_id] = future
        self._act(actions)
        return await future

    # ---- requests from peers --------------------------------------------------------------------
    def _link_up(self, link: PeerLink) -> None:
        if link.record is not None:
            self._act(self.node.contact_seen(contact_of(link.record), self.clock()))

    def _request(self, link: PeerLink, msg: Any, request_id: int | None) -> None:
        assert link.record is not None
        msg_type, _ = pm.to_fields(msg)
        try:
            request = self._as_dht_request(msg)
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

    def _as_dht_request(self, msg: Any) -> dm.Request:
        if isinstance(msg, pm.PeerPing):
            return dm.Ping()
        if isinstance(msg, pm.FindNode):
            return dm.FindNode(msg.target)
        if isinstance(msg, pm.FindValue):
            return dm.FindValue(msg.key)
        if isinstance(msg, pm.Store):
            return dm.Store(self.codec.decode_value(msg.object))
        raise DhtProtocolError(codes.UNEXPECTED_MESSAGE, f"not a DHT request: {type(msg).__name__}")

    def _answer(self, link: PeerLink, msg_type: int, request_id: int | None, answer: dm.Answer) -> None:
        if isinstance(answer, dm.Pong):
            link.answer(request_id, pm.PeerPingReply(int(answer.time * 1000)))
        elif isinstance(answer, dm.Nodes):
            link.answer(request_id, pm.Nodes(tuple(self._records(answer.contacts))))
        elif isinstance(answer, dm.Found):
            link.answer(request_id, pm.ValueFound(self.codec.object_of(answer.value.obj)))
        elif isinstance(answer, dm.Refused):
            self.stores_refused[answer.code] = self.stores_refused.get(answer.code, 0) + 1
            link.error(msg_type, request_id, answer.code, answer.message)
        else:
            link.answer_fields(msg_type, request_id, {})

    def _records(self, contacts: list[Contact]) -> list[SignedObject]:
        out = []
        for contact in contacts:
            record = contact.record
            if not isinstance(record, SignedObject):
                live = self.network.links.get(contact.address)
                record = live.record if live is not None else None
            if isinstance(record, SignedObject):
                out.append(record)
        return out

    # ---- the machine's actions ------------------------------------------------------------------
    def _act(self, actions: list[Any] | None) -> None:
        for action in actions or ():
            if isinstance(action, Send):
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

    async def _send(self, send: Send) -> None:
        contact = send.to
        try:
            link = await self.network.connect(contact.address, contact.host, contact.peer_port)
        except PeerError:
            self._act(self.node.on_failure(send.request_id, self.clock()))
            return
        request = _as_peer_request(send.request, self.codec)
        timeout = self.node.config.hard_timeout + 1.0  # the machine's own hard timeout comes first
        link.request(request, lambda answer: self._answered(send, link, answer), timeout)

    def _answered(self, send: Send, link: PeerLink, answer: Any) -> None:
        now = self.clock()
        try:
            parsed = self._as_dht_answer(send.request, answer)
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

    def _as_dht_answer(self, request: dm.Request, answer: Any) -> dm.Answer | None:
        if answer is None or isinstance(answer, PeerError):
            return None
        if isinstance(answer, ErrorReply):
            return dm.Refused(answer.code, answer.message)
        if isinstance(answer, pm.PeerPingReply):
            return dm.Pong(answer.time / 1000)
        if isinstance(answer, pm.Empty):
            return dm.Stored()
        if isinstance(answer, pm.ValueFound):
            value = self.codec.decode_value(answer.object)
            if not isinstance(request, dm.FindValue) or value.key != request.key:
                raise DhtProtocolError("mis_keyed", "FIND_VALUE answered with an object of another key")
            return dm.Found(value)
        if isinstance(answer, pm.Nodes):
            return dm.Nodes([self.codec.decode_contact(obj) for obj in answer.nodes])
        return None

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


def _as_peer_request(request: dm.Request, codec: ObjectCodec) -> Any:
    if isinstance(request, dm.Ping):
        return pm.PeerPing()
    if isinstance(request, dm.FindNode):
        return pm.FindNode(request.target)
    if isinstance(request, dm.FindValue):
        return pm.FindValue(request.key)
    return pm.Store(codec.object_of(request.value.obj))


def _quiet(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("DHT send failed", exc_info=task.exception())
