"""MERKLE over a peer link (SPEC 4 type 0x28, SPEC 6): answer ranges, and reconcile with a peer.

The rules are chrnode.objects.merkle's (range hashes, the pure :class:`Reconciler`); this adapter
sends its queries over one link, then fetches with FIND_VALUE the keys the peer holds newer and
STOREs at the peer the ones held newer here. Everything that arrives is checked by the object
codec and offered to the same rules as a STORE (``accept``), so a peer cannot slip a forged or
stale object in through reconciliation. What was exchanged is counted (``network_stats``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chrnode.dht import DhtProtocolError
from chrnode.edge import codes
from chrnode.net.codecs import ObjectCodec
from chrnode.objects import merkle
from chrnode.objects.signed import SignedObject
from chrnode.objects.store import ObjectStore
from chrnode.peer import messages as pm
from chrnode.peer.link import PeerLink
from chrnode.peer.link_send import PeerError

__all__ = ["HELD", "NEW", "REFUSED", "MerkleSync", "SyncResult"]

_log = logging.getLogger("chrnode.objects")

IN_FLIGHT = 16
RECENT = 16
NEW, HELD, REFUSED = "new", "held", "refused"


@dataclass(frozen=True, slots=True)
class SyncResult:
    peer: bytes
    queries: int
    fetched: int
    pushed: int
    refused: int
    had: int  # fetched, but a STORE had brought it meanwhile
    gave_up: bool
    fetched_keys: tuple[bytes, ...] = ()
    pushed_keys: tuple[bytes, ...] = ()

    def summary(self) -> dict[str, Any]:
        """For network_stats: with whom, and which keys moved each way (0x-hex)."""
        return {
            "peer": "0x" + self.peer.hex(),
            "queries": self.queries,
            "fetched": ["0x" + k.hex() for k in self.fetched_keys],
            "pushed": ["0x" + k.hex() for k in self.pushed_keys],
        }


class MerkleSync:
    """MERKLE answers from ``store`` and reconciliations against peers, with their totals."""

    def __init__(
        self,
        store: ObjectStore,
        codec: ObjectCodec,
        accept: Callable[[SignedObject], str],
        clock: Callable[[], float],
        *,
        timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.codec = codec
        # Offers an object to the node's rules: NEW (now held), HELD (it came meanwhile, by a
        # STORE over the same new link) or REFUSED.
        self.accept = accept
        self.clock = clock
        self.timeout = timeout
        self.totals = {
            "runs": 0, "queries": 0, "fetched": 0, "pushed": 0, "refused": 0, "had": 0, "answered": 0
        }  # fmt: skip
        self.recent: deque[SyncResult] = deque(maxlen=RECENT)  # runs that moved something
        self._running: set[bytes] = set()

    def answer(self, link: PeerLink, msg: Any, request_id: int | None) -> None:
        """A peer's MERKLE request: the hash or items of that range of what is held here."""
        assert isinstance(msg, pm.Merkle)
        try:
            fields = merkle.answer(self.store, msg.prefix, msg.bits, self.clock())
        except ValueError as exc:
            link.error(pm.MERKLE, request_id, codes.BAD_PAYLOAD, f"bad MERKLE range: {exc}")
            return
        self.totals["answered"] += 1
        link.answer_fields(pm.MERKLE, request_id, fields)

    async def reconcile(self, link: PeerLink) -> SyncResult | None:
        """Compare with the peer of ``link`` and exchange what differs (None if one runs already)."""
        peer = link.node
        if peer is None or peer in self._running:
            return None
        self._running.add(peer)
        try:
            result = await self._reconcile(link, peer)
        finally:
            self._running.discard(peer)
        totals = self.totals
        totals["runs"] += 1
        totals["queries"] += result.queries
        totals["fetched"] += result.fetched
        totals["pushed"] += result.pushed
        totals["refused"] += result.refused
        totals["had"] += result.had
        if result.fetched or result.pushed:
            self.recent.append(result)
            _log.info(
                "MERKLE with %s: %d queries, fetched %d, pushed %d, refused %d",
                link.label(),
                result.queries,
                result.fetched,
                result.pushed,
                result.refused,
            )
        return result

    async def _reconcile(self, link: PeerLink, peer: bytes) -> SyncResult:
        rec = merkle.Reconciler(self.store, self.clock())
        queries = rec.start()
        while queries:
            # A few ranges in flight at once: the peer's per-link rate limit stays far away.
            batch, queries = queries[:IN_FLIGHT], queries[IN_FLIGHT:]
            answers = await asyncio.gather(*(self._ask(link, q) for q in batch))
            for q, reply in answers:
                if reply is None:
                    rec.pending.discard(q)  # unanswered: that range stays unsettled this time
                    continue
                try:
                    queries += rec.on_answer(q, reply)
                except ValueError as exc:
                    _log.info("bad MERKLE answer from %s: %s", link.label(), exc)
        refused = had = 0
        fetched: list[bytes] = []
        pushed: list[bytes] = []
        for key in sorted(rec.fetch):
            obj = await self._fetch(link, key)
            status = REFUSED if obj is None else self.accept(obj)
            if status == NEW:
                fetched.append(key)
            elif status == HELD:
                had += 1
            else:
                refused += 1
        for key in sorted(rec.push):
            obj = self.store.get(key, self.clock())
            if obj is not None and await self._push(link, obj):
                pushed.append(key)
        return SyncResult(
            peer,
            rec.sent,
            len(fetched),
            len(pushed),
            refused,
            had,
            rec.gave_up,
            tuple(fetched),
            tuple(pushed),
        )

    async def _ask(self, link: PeerLink, query: merkle.Query) -> tuple[merkle.Query, Any]:
        try:
            return query, await link.ask(pm.Merkle(query.prefix, query.bits), self.timeout)
        except PeerError:
            return query, None

    async def _fetch(self, link: PeerLink, key: bytes) -> SignedObject | None:
        try:
            answer = await link.ask(pm.FindValue(key), self.timeout)
        except PeerError:
            return None
        if not isinstance(answer, pm.ValueFound):
            return None
        try:
            obj = self.codec.object_of(answer.object)
        except DhtProtocolError as exc:
            _log.info("%s sent a bad object in MERKLE sync: %s", link.label(), exc)
            return None
        return obj if obj.key == key else None

    async def _push(self, link: PeerLink, obj: SignedObject) -> bool:
        try:
            await link.ask(pm.Store(obj), self.timeout)
        except PeerError as exc:
            _log.debug("%s refused a pushed object: %s", link.label(), exc)
            return False
        return True
