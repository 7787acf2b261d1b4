"""MERKLE (SPEC 4 type 0x28): two nodes find the objects they hold differently, exchanging little.

A range of the key space is a prefix of ``bits`` bits. Its hash is

    keccak256(key_1 || seq_1 || key_2 || seq_2 || ...)   (keys ascending, seq 8 bytes big-endian)

over the live objects held in the range, so two holders of the same (key, seq) set get the same
hash whatever else they hold. A node asked for a range answers ``{hash}``, or ``{items: [[key,
seq], ...]}`` when it holds at most :data:`FEW` objects there (one round trip saved).

:class:`Reconciler` is the asking side, a pure state machine: :meth:`start` gives the first query,
:meth:`on_answer` takes the peer's answer to one range and gives more queries (the two halves of a
range whose hashes differ) until every range is settled; :attr:`fetch` and :attr:`push` then hold
the keys the peer has newer (to ask for with FIND_VALUE) and those we have newer (to STORE at the
peer). Equal ranges stop the descent at once, so after a partition two nodes exchange queries in
proportion to what differs, not to what they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chrnode.crypto import keccak256
from chrnode.objects.store import ObjectStore, key_range

__all__ = ["FEW", "MAX_QUERIES", "Query", "Reconciler", "answer", "range_hash"]

FEW = 16
MAX_QUERIES = 4096  # a lying peer cannot make us descend for ever
KEY_BITS = 160


@dataclass(frozen=True, slots=True)
class Query:
    """A MERKLE request to send: ``{prefix, bits}``."""

    prefix: bytes
    bits: int

    def to_wire(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "bits": self.bits}


def _items(store: ObjectStore, prefix: bytes, bits: int, now: float) -> list[tuple[bytes, int]]:
    return [(obj.key, obj.seq) for obj in store.in_range(prefix, bits, now)]


def _hash(items: list[tuple[bytes, int]]) -> bytes:
    return keccak256(b"".join(key + seq.to_bytes(8, "big") for key, seq in items))


def range_hash(store: ObjectStore, prefix: bytes, bits: int, now: float) -> bytes:
    return _hash(_items(store, prefix, bits, now))


def answer(store: ObjectStore, prefix: bytes, bits: int, now: float) -> dict[str, Any]:
    """The answer to a MERKLE request for this range (raises ValueError on a bad range)."""
    key_range(prefix, bits)
    items = _items(store, prefix, bits, now)
    if len(items) <= FEW:
        return {"items": [[key, seq] for key, seq in items]}
    return {"hash": _hash(items)}


def _halves(prefix: bytes, bits: int) -> tuple[Query, Query]:
    size = (bits + 1 + 7) // 8
    base = bytearray(prefix[:size].ljust(size, b"\0"))
    byte, bit = divmod(bits, 8)
    base[byte] &= ~(0x80 >> bit) & 0xFF
    low = bytes(base)
    base[byte] |= 0x80 >> bit
    return Query(low, bits + 1), Query(bytes(base), bits + 1)


@dataclass
class Reconciler:
    """Compare our store with a peer's, range by range. Feed it the peer's answers."""

    store: ObjectStore
    now: float
    fetch: set[bytes] = field(default_factory=set)
    push: set[bytes] = field(default_factory=set)
    pending: set[Query] = field(default_factory=set)
    sent: int = 0
    gave_up: bool = False

    def start(self) -> list[Query]:
        return self._ask([Query(b"", 0)])

    @property
    def done(self) -> bool:
        return not self.pending

    def on_answer(self, query: Query, reply: object) -> list[Query]:
        """The peer's answer to ``query``; returns the next queries to send (maybe none).

        A malformed answer settles nothing for that range and is dropped (the caller may count
        it against the peer); it raises ValueError so the caller knows.
        """
        if query not in self.pending:
            raise ValueError("an answer to a range that was not asked for")
        self.pending.discard(query)
        if not isinstance(reply, dict):
            raise ValueError("a MERKLE answer must be a map")
        ours = _items(self.store, query.prefix, query.bits, self.now)
        if "items" in reply:
            self._compare(ours, _parse_items(reply["items"], query))
            return []
        their_hash = reply.get("hash")
        if not isinstance(their_hash, bytes) or len(their_hash) != 32:
            raise ValueError("a MERKLE answer must carry a 32-byte hash or items")
        if their_hash == _hash(ours):
            return []
        if query.bits >= KEY_BITS:
            raise ValueError("a MERKLE answer for a single key must list it")
        return self._ask(list(_halves(query.prefix, query.bits)))

    def _ask(self, queries: list[Query]) -> list[Query]:
        if self.sent + len(queries) > MAX_QUERIES:
            self.gave_up = True
            return []
        self.sent += len(queries)
        self.pending.update(queries)
        return queries

    def _compare(self, ours: list[tuple[bytes, int]], theirs: dict[bytes, int]) -> None:
        mine = dict(ours)
        for key, seq in theirs.items():
            if seq > mine.get(key, -1):
                self.fetch.add(key)
        for key, seq in mine.items():
            if seq > theirs.get(key, -1):
                self.push.add(key)


def _parse_items(raw: object, query: Query) -> dict[bytes, int]:
    if not isinstance(raw, list) or len(raw) > 4 * FEW:
        raise ValueError(f"MERKLE items must be a list of at most {4 * FEW} [key, seq] pairs")
    low, high = key_range(query.prefix, query.bits)
    items: dict[bytes, int] = {}
    for pair in raw:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise ValueError("each MERKLE item must be [key, seq]")
        key, seq = pair
        if not isinstance(key, bytes) or len(key) != 20 or type(seq) is not int or seq < 0:
            raise ValueError("each MERKLE item must be [20-byte key, seq >= 0]")
        if key < low or (high is not None and key >= high):
            raise ValueError("a MERKLE item lies outside the range asked for")
        items[key] = seq
    return items
